"""A running guest: boot, run commands, read dmesg and IOMMU groups, power off.

``with Guest(config) as g:`` boots on entry and always stops and reaps QEMU on exit, whatever
happened inside; QEMU also dies with the harness process (see :mod:`harness.qemu`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal

from .channels import Result
from .channels.serial import SerialShell
from .channels.ssh import SSHShell, client_key, generate_client_pem, public_line
from .deadline import Deadline
from .dmesg import FATAL_KINDS, Event, Record, classify, events_of, parse_records
from .errors import BootError, CommandTimeout, GuestDied, GuestError, GuestHung, HarnessError
from .image import GuestImage
from .kernel import KernelArtifact
from .platforms import Platform
from .qemu import LaunchSpec, QemuProcess, build_argv, shell_quoted
from .snapshot import INCOMING_ARGS, SSH_KEY_PARAM, SavedState, SnapshotStore, state_key, write_meta
from .sysfs import GROUPS_SCRIPT, IommuGroup, bind_script, parse_groups
from .topology import Topology, device_bdf

log = logging.getLogger(__name__)

CONSOLE_TAIL_LINES = 40
RESTORE_TIMEOUT = 30.0  # seconds a restored guest gets to answer before it is booted instead


@dataclass(frozen=True)
class GuestConfig:
    platform: Platform
    kernel: KernelArtifact
    image: GuestImage
    topology: Topology
    accel: str
    out_dir: Path  # this guest's own folder: console log, argv, QEMU's stderr
    boot_timeout: float = 90.0
    extra_append: tuple[str, ...] = ()
    # Commands that make a booted guest ready (before it is saved); a restored one is.
    ready: tuple[str, ...] = ()
    # Commands right before a save and right after a restore (for state QEMU does not
    # migrate); they must succeed.
    before_save: tuple[str, ...] = ()
    after_restore: tuple[str, ...] = ()
    # Where saved guests live; None: always boot, never save.
    snapshots: SnapshotStore | None = None


class Guest:
    def __init__(self, config: GuestConfig) -> None:
        self.config = config
        self.out_dir = config.out_dir
        self.console_log = config.out_dir / "console.log"
        self._sockdir: Path | None = None
        self.qemu: QemuProcess | None = None
        self.serial: SerialShell | None = None
        self._ssh: SSHShell | None = None
        self._ssh_pem = generate_client_pem()
        self._ssh_key = client_key(self._ssh_pem)
        self._transcript: BinaryIO | None = None
        # When steps on this guest faulted (or were predicted to): its kernel's IOMMU drivers
        # rate-limit their fault reports, whoever drives it.
        self.fault_times: list[float] = []
        self.started_from: Literal["boot", "restore", ""] = ""
        self.restored_from: SavedState | None = None  # the state this guest started from
        self.saved_as: SavedState | None = None  # the state this guest's boot was saved as
        self.notice = ""  # why a restore fell back to a boot

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Guest:
        try:
            self.boot()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def boot(self) -> None:
        """Start the guest: from its saved state when the config has a snapshot store and the
        state is there, else by booting it (and saving it for the next guest)."""
        cfg = self.config
        self._new_out_dir()
        store = cfg.snapshots
        if store is None:
            self._boot()
            return
        key = state_key(self._spec(), cfg.ready, cfg.before_save, cfg.after_restore)
        with store.lock(key):
            saved = store.find(key)
            if saved is None:
                self._boot()
                self._save(store, key)
                return
        try:
            self._restore(saved)
            store.touch(saved)
        except (HarnessError, OSError) as exc:  # OSError: the state went away meanwhile
            why = exc.problem if isinstance(exc, HarnessError) else str(exc)
            self.notice = f"the saved guest {key} did not restore ({why}); booting instead"
            log.warning("%s", self.notice)
            self._stop_qemu_now()
            self._close_channels()
            shutil.rmtree(self._sockdir or "", ignore_errors=True)
            self._sockdir = None
            store.discard(key)
            self._new_out_dir()  # the failed restore's logs stay in their folder
            self._boot()
            with store.lock(key):
                if store.find(key) is None:
                    self._save(store, key)

    def _new_out_dir(self) -> None:
        # A config started again gets a sibling folder: no guest overwrites another's logs.
        cfg = self.config
        n = 1
        while (self.out_dir / "console.log").exists():
            n += 1
            self.out_dir = cfg.out_dir.with_name(f"{cfg.out_dir.name}-boot{n}")
            self.console_log = self.out_dir / "console.log"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self._sockdir is None:
            # Unix socket paths are limited to 108 bytes: a short private directory.
            self._sockdir = Path(tempfile.mkdtemp(prefix="ih-"))

    def _spec(self) -> LaunchSpec:
        cfg = self.config
        assert self._sockdir is not None
        key = public_line(self._ssh_key).replace(" ", ":", 1)
        return LaunchSpec(
            platform=cfg.platform, topology=cfg.topology, kernel=cfg.kernel.boot_image,
            initrd=cfg.image.path,
            append=(*cfg.platform.cmdline, *cfg.extra_append, f"{SSH_KEY_PARAM}{key}"),
            accel=cfg.accel, console_log=self.console_log,
            qmp_socket=self._sockdir / "qmp.sock", control_socket=self._sockdir / "ctl.sock")

    def _launch(self, spec: LaunchSpec, argv: tuple[str, ...], deadline: Deadline) -> None:
        (self.out_dir / "qemu.argv").write_text(shell_quoted(argv) + "\n")
        log.info("launching: %s", shell_quoted(argv))
        self.qemu = QemuProcess(spec, argv, self.out_dir / "qemu.stderr")
        self.qemu.start(deadline)
        assert self.qemu.control is not None
        self._transcript = (self.out_dir / "control.log").open("wb")
        self.serial = SerialShell(self.qemu.control.fileno(), transcript=self._transcript)

    def _boot(self) -> None:
        cfg = self.config
        spec = self._spec()
        argv = build_argv(spec)
        deadline = Deadline.after(cfg.boot_timeout)
        self._launch(spec, argv, deadline)
        assert self.serial is not None
        try:
            self.serial.wait_ready(deadline)
            for command in cfg.ready:
                self.check(command, timeout=max(1.0, deadline.remaining))
        except HarnessError as exc:
            raise BootError(f"guest did not reach its control shell within "
                            f"{cfg.boot_timeout:.0f}s", f"see {self.console_log}",
                            argv=argv, console_tail=self.console_tail()) from exc
        self.started_from = "boot"

    def _save(self, store: SnapshotStore, key: str) -> None:
        """Save this freshly booted guest's state under ``key``, then let it run on."""
        assert self.qemu is not None
        for command in self.config.before_save:
            self.check(command)
        staged = store.staging(key)
        started = time.monotonic()
        try:
            self.qemu.save_state(staged / "state", Deadline.after(60.0))
            self.qemu.resume()
            (staged / "ssh_key").touch(mode=0o600)
            (staged / "ssh_key").write_text(self._ssh_pem)
            shutil.copyfile(self.console_log, staged / "console.log")
            write_meta(staged, argv=list(self.qemu.argv), saved_from=str(self.out_dir),
                       seconds=round(time.monotonic() - started, 3))
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        self.saved_as = store.publish(key, staged)

    def _restore(self, saved: SavedState) -> None:
        """Start a new QEMU from a saved state; the guest answers where the saved one stood."""
        cfg = self.config
        self._ssh_pem = saved.ssh_key.read_text()
        self._ssh_key = client_key(self._ssh_pem)
        spec = self._spec()
        argv = (*build_argv(spec), *INCOMING_ARGS)
        deadline = Deadline.after(min(cfg.boot_timeout, RESTORE_TIMEOUT))
        shutil.copyfile(saved.boot_log, self.out_dir / "boot-console.log")
        self._launch(spec, argv, deadline)
        assert self.qemu is not None and self.serial is not None
        self.qemu.load_state(saved.state, deadline)
        self.qemu.resume()
        for command in cfg.after_restore or ("true",):
            self.check(command, timeout=max(0.5, deadline.remaining))
        self.started_from = "restore"
        self.restored_from = saved

    def close(self) -> None:
        """Power off cleanly if the guest still answers, else QMP quit, else kill; always reap."""
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None
        if self.qemu is not None:
            # A restored guest is disposable: QEMU quits at once, no power-off needed.
            if self.serial is not None and not self.qemu.exited and \
                    self.started_from == "boot":
                with contextlib.suppress(GuestError):
                    self.serial.post("poweroff -f")
                self.qemu.wait(Deadline.after(3.0))
            if not self.qemu.exited:
                self.qemu.quit(Deadline.after(2.0))
            self.qemu.kill()
            self.qemu = None
        self._close_channels()
        if self._sockdir is not None:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None

    def _close_channels(self) -> None:
        self.serial = None
        if self._transcript is not None:
            self._transcript.close()
            self._transcript = None

    # ------------------------------------------------------------------ commands
    def run(self, command: str, timeout: float = 60.0) -> Result:
        """Run a command over the control channel.

        A command that overruns ``timeout`` is interrupted and raises CommandTimeout; if the
        guest does not even take the interrupt it has stopped answering: QEMU is killed and
        GuestHung raised. If the guest dies under the command, GuestDied carries the kernel's
        last report (panic, oops) from the console log.
        """
        if self.serial is None:
            raise GuestError("the guest is not running", "boot it first")
        try:
            return self.serial.run(command, timeout)
        except CommandTimeout as exc:
            if not self.serial.broken:
                raise
            self._stop_qemu_now()
            raise GuestHung(f"the guest stopped answering during {_short(command)} (no reply "
                            f"within {timeout:.0f}s, interrupt ignored); QEMU was killed",
                            f"see {self.console_log}", console_tail=self.console_tail()
                            ) from exc
        except GuestError as exc:
            raise self._death(command, exc) from exc

    def _death(self, command: str, cause: GuestError) -> GuestDied:
        if self.qemu is not None:
            self.qemu.wait(Deadline.after(2.0))  # a panicking guest is still printing
            self._stop_qemu_now()
        log = self.console_log.read_text(errors="replace") if self.console_log.exists() else ""
        # The first fatal report names the cause; the panic that follows an oops only says
        # "Fatal exception".
        fatal = [e for e in events_of(log) if e.kind in FATAL_KINDS]
        what = fatal[0].signature if fatal else "QEMU exited or was killed"
        return GuestDied(f"the guest died during {_short(command)}: {what}",
                         f"see {self.console_log}",
                         events=tuple(fatal), console_tail=self.console_tail())

    def _stop_qemu_now(self) -> None:
        if self.qemu is not None:
            self.qemu.kill()

    @property
    def alive(self) -> bool:
        return self.qemu is not None and not self.qemu.exited and self.serial is not None \
            and not self.serial.broken

    # ------------------------------------------------------------------ kernel log
    def kmsg_mark(self) -> KmsgMark:
        """Where the kernel log stands now (ih-kmsg -n): the next record's sequence number and
        the last record's timestamp, to slice /dev/kmsg or a console log from here on."""
        seq, usec = self.check("ih-kmsg -n").split()
        return KmsgMark(int(seq), int(usec))

    def kmsg_since(self, seq: int) -> list[Record]:
        """Kernel log records from ``seq`` on, read from /dev/kmsg (ih-kmsg)."""
        return list(parse_records(self.check(f"ih-kmsg {int(seq)}")))

    def events_since(self, seq: int) -> list[Event]:
        return classify(self.kmsg_since(seq))

    def run_traced(self, command: str, timeout: float = 60.0) -> Traced:
        """Run one command and return, with its result, the kernel events it caused (the
        records logged between the command's start and its end)."""
        mark = self.kmsg_mark()
        result = self.run(command, timeout)
        return Traced(result, tuple(self.events_since(mark.seq)))

    def check(self, command: str, timeout: float = 60.0) -> str:
        """Run a command that must succeed; return its output as text."""
        result = self.run(command, timeout)
        if result.exit_code != 0:
            raise GuestError(f"guest command failed with exit {result.exit_code}: {command!r}: "
                             f"{result.stderr.decode(errors='replace').strip()[-300:]}")
        return result.text

    @property
    def ssh(self) -> SSHShell:
        """The SSH transport, connected on first use (dropbear starts after the agent)."""
        if self._ssh is None:
            port = self.forward_ssh()
            shell = SSHShell(port, self._ssh_key, self.config.image.host_key)
            shell.connect(Deadline.after(60.0))
            self._ssh = shell
        return self._ssh

    def forward_ssh(self) -> int:
        """Forward a free 127.0.0.1 port to the guest's port 22; return it.

        Asking slirp for port 0 lets the host kernel pick a free port with no race between
        harness runs; ``info usernet`` then shows which one it is.
        """
        if self.qemu is None or self.qemu.qmp is None:
            raise GuestError("the guest is not running", "boot it first")
        qmp = self.qemu.qmp
        err = qmp.cmd("human-monitor-command",
                      **{"command-line": "hostfwd_add net0 tcp:127.0.0.1:0-:22"})
        if err:
            raise GuestError(f"QEMU refused the SSH forward: {str(err).strip()}")
        table = str(qmp.cmd("human-monitor-command", **{"command-line": "info usernet"}))
        port = parse_forwarded_port(table, guest_port=22)
        if port is None:
            raise GuestError(f"no SSH forward in QEMU's table: {table.strip()!r}")
        return port

    # ------------------------------------------------------------------ state
    def dmesg(self) -> str:
        return self.check("dmesg")

    def groups(self) -> tuple[IommuGroup, ...]:
        """A snapshot of the IOMMU state in sysfs: groups, default domain types, reserved
        regions, members and their drivers (compare two with sysfs.diff_snapshots)."""
        return parse_groups(self.check(GROUPS_SCRIPT))

    def load_module(self, name: str, params: str = "") -> None:
        """insmod one of our guest modules; the guest's refusal is an error, never ignored."""
        result = self.run(f'insmod "/lib/modules/$(uname -r)/extra/{name}.ko" {params}')
        if result.exit_code != 0:
            raise GuestError(f"the guest refused module {name}: "
                             f"{result.stderr.decode(errors='replace').strip()}",
                             "see dmesg in the console log")

    def unload_module(self, name: str) -> None:
        result = self.run(f"rmmod {name}")
        if result.exit_code != 0:
            raise GuestError(f"rmmod {name} failed: "
                             f"{result.stderr.decode(errors='replace').strip()}")

    def bind(self, bdf: str, driver: str) -> None:
        """Bind a PCI device to a driver; raise if it does not end up bound to it."""
        result = self.run(bind_script(bdf, driver))
        if result.text.strip() != driver:
            raise GuestError(f"binding {bdf} to {driver} failed: "
                             f"{(result.text + result.stderr.decode(errors='replace')).strip()}",
                             "see dmesg in the console log")

    def unbind(self, bdf: str) -> None:
        """Leave a PCI device with no driver (and no override that would rebind it)."""
        d = f"/sys/bus/pci/devices/{bdf}"
        self.check(f"echo > {d}/driver_override; "
                   f"[ ! -e {d}/driver ] || echo {bdf} > {d}/driver/unbind")

    def bind_topology(self, driver: str) -> tuple[str, ...]:
        """Bind every test device of the topology to ``driver``, in address order; return their
        ids in that order (what :func:`~harness.topology.predict_groups` calls ``bound``)."""
        topo = self.config.topology
        order = sorted(topo.devices, key=lambda d: device_bdf(topo, d))
        for d in order:
            self.bind(device_bdf(topo, d), driver)
        return tuple(d.id for d in order)

    def console_tail(self, lines: int = CONSOLE_TAIL_LINES) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _short(command: str, limit: int = 160) -> str:
    """A command as error messages quote it: a batch of thousands of lines is cut."""
    text = repr(command)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(command)} bytes)"


@dataclass(frozen=True)
class Traced:
    result: Result
    events: tuple[Event, ...]


@dataclass(frozen=True)
class KmsgMark:
    seq: int
    usec: int


def parse_forwarded_port(info_usernet: str, guest_port: int) -> int | None:
    """The host port of a TCP host forward to ``guest_port`` in ``info usernet`` output.

    Rows look like ``  TCP[HOST_FORWARD]  13  127.0.0.1  34567  10.0.2.15  22  0  0``.
    """
    for line in info_usernet.splitlines():
        m = re.match(r"\s*TCP\[HOST_FORWARD\]\s+\d+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)", line)
        if m and int(m.group(4)) == guest_port and int(m.group(2)) != 0:
            return int(m.group(2))
    return None
