"""QEMU: the argv built from a platform preset and a topology (pure), and the process lifecycle.

The argv is a literal list, never a shell string; :func:`shell_quoted` renders it for logs so a
user can paste it. The harness listens on the QMP and control sockets before QEMU starts and
QEMU connects to them as a client, so nothing the guest says is lost and nothing is polled.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import select
import shlex
import signal
import socket
import subprocess
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from qemu.qmp import ExecuteError
from qemu.qmp.legacy import QEMUMonitorProtocol

from .deadline import Deadline
from .errors import BootError, GuestError
from .platforms import InfraDevice, Platform
from .topology import Topology, device_args


@dataclass(frozen=True)
class LaunchSpec:
    platform: Platform
    topology: Topology
    kernel: Path
    initrd: Path
    append: tuple[str, ...]
    accel: str  # "tcg" or "kvm"
    console_log: Path
    qmp_socket: Path
    control_socket: Path
    smp: int = 1


def build_argv(spec: LaunchSpec) -> tuple[str, ...]:
    p = spec.platform
    accel = ("-accel", "kvm", "-cpu", p.cpu_kvm) if spec.accel == "kvm" else \
        ("-accel", "tcg,thread=multi", "-cpu", p.cpu_tcg)
    argv: list[str] = [
        p.qemu_binary, "-name", f"iommu-harness-{p.name}",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-M", p.machine, *accel, "-smp", str(spec.smp), "-m", str(p.memory_mb),
        "-kernel", str(spec.kernel), "-initrd", str(spec.initrd),
        "-append", " ".join(spec.append),
        "-chardev", f"file,id=console,path={spec.console_log}",
        "-serial", "chardev:console",
        "-chardev", f"socket,id=qmp,path={spec.qmp_socket}",
        "-mon", "chardev=qmp,mode=control",
    ]
    # The vIOMMU must exist before any PCI device is created (QEMU refuses otherwise).
    for dev in p.iommu_device:
        argv += ["-device", dev]
    argv += ["-chardev", f"socket,id=ctl,path={spec.control_socket}"]
    for infra in p.infra:
        argv += _infra_args(infra, p.root_bus)
    argv += device_args(spec.topology, p)
    return tuple(argv)


def _infra_args(infra: InfraDevice, bus: str) -> list[str]:
    device = f"{infra.qemu_driver},id={infra.qemu_id},bus={bus},addr={infra.slot:#x}"
    if infra.role == "control":
        return ["-device", device,
                "-device", f"virtconsole,bus={infra.qemu_id}.0,chardev=ctl,name=ctl"]
    if infra.role == "network":
        # User networking; SSH is forwarded later over QMP, on 127.0.0.1 only.
        # romfile= skips the iPXE option ROM: the guest boots from -kernel, never the network.
        return ["-netdev", "user,id=net0", "-device", f"{device},netdev=net0,romfile="]
    raise ValueError(f"unknown infrastructure role {infra.role!r}")


def shell_quoted(argv: tuple[str, ...]) -> str:
    return shlex.join(argv)


# ---------------------------------------------------------------------------------- lifecycle

_PR_SET_PDEATHSIG = 1
QEMU_NICE = 5  # niceness QEMU runs at, above the harness's
_live: weakref.WeakSet[QemuProcess] = weakref.WeakSet()


def default_signals() -> None:
    """In a child before exec: the default dispositions of the signals the harness stops its
    children with, whatever it inherited (a harness started from ``nohup ... &`` or cron has
    SIGINT and SIGQUIT ignored, and an ignored disposition survives exec)."""
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _die_with_parent(parent: int) -> None:
    """In the child before exec: SIGKILL when the harness dies, even by SIGKILL; default
    signal dispositions."""
    default_signals()
    # Below the harness in priority: the harness's control-channel pump must never wait for
    # a guest's vCPU, or QEMU drops console output it cannot write at once (see
    # channels/serial.py); among themselves, guests share the CPU as before.
    os.nice(QEMU_NICE)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def live_processes() -> list[QemuProcess]:
    """QEMU processes this harness started and has not reaped yet."""
    return list(_live)


@atexit.register
def _kill_survivors() -> None:
    for proc in live_processes():
        proc.kill()


class QemuProcess:
    """One QEMU: started with sockets already listening, stopped and reaped exactly once."""

    def __init__(self, spec: LaunchSpec, argv: tuple[str, ...], stderr_log: Path) -> None:
        self.spec = spec
        self.argv = argv
        self._stderr_log = stderr_log
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfd = -1
        self.qmp: QEMUMonitorProtocol | None = None
        self.control: socket.socket | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, deadline: Deadline) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.spec.control_socket))
            listener.listen(1)
            self.qmp = QEMUMonitorProtocol(str(self.spec.qmp_socket), server=True)
            parent = os.getpid()
            with self._stderr_log.open("wb") as err:
                self._proc = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                    start_new_session=True,
                    # Spawned from the main thread only: PDEATHSIG follows the spawning thread.
                    preexec_fn=lambda: _die_with_parent(parent))  # noqa: PLW1509
            _live.add(self)
            self._pidfd = os.pidfd_open(self._proc.pid)
            self.control = self._accept(listener, deadline)
            self.qmp.accept(timeout=max(0.1, deadline.remaining))
        except BootError:
            self.kill()
            raise
        except Exception as exc:
            self.kill()
            raise BootError(f"QEMU did not start: {exc}", "see the QEMU log",
                            argv=self.argv, console_tail=self.stderr_text()) from exc
        finally:
            listener.close()

    def _accept(self, listener: socket.socket, deadline: Deadline) -> socket.socket:
        watched: list[socket.socket | int] = [listener, self._pidfd]
        ready, _, _ = select.select(watched, [], [], deadline.remaining)
        if self._pidfd in ready or not ready:
            why = "exited" if self._pidfd in ready else "did not connect in time"
            raise BootError(f"QEMU {why}: {self.stderr_text().strip()[-400:]}",
                            "check the command line and that QEMU is installed (make deps)",
                            argv=self.argv)
        conn, _ = listener.accept()
        return conn

    def stderr_text(self) -> str:
        try:
            return self._stderr_log.read_text(errors="replace")
        except OSError:
            return ""

    def wait(self, deadline: Deadline) -> bool:
        """True once the process has exited (without reaping it)."""
        if self._proc is None or self._proc.returncode is not None:
            return True
        ready, _, _ = select.select([self._pidfd], [], [], deadline.remaining)
        return bool(ready)

    @property
    def exited(self) -> bool:
        return self._proc is None or self._proc.poll() is not None

    def quit(self, deadline: Deadline) -> bool:
        """Ask QEMU to quit over QMP; True if it exited before the deadline."""
        if self.qmp is None or self.exited:
            return self.exited
        try:
            self.qmp.settimeout(max(0.1, deadline.remaining))
            self.qmp.cmd("quit")
        except Exception:  # noqa: BLE001 - QMP may already be gone; kill follows
            pass
        return self.wait(deadline)

    def kill(self) -> None:
        """SIGKILL and reap; safe to call more than once."""
        if self._proc is not None:
            if self._proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        _live.discard(self)
        for closer in (self._close_qmp, self._close_control, self._close_pidfd):
            closer()

    def _close_qmp(self) -> None:
        if self.qmp is not None:
            with contextlib.suppress(Exception):  # closing a dead monitor may raise anything
                self.qmp.close()
            self.qmp = None

    def _close_control(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None

    def _close_pidfd(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def save_state(self, target: Path, deadline: Deadline) -> None:
        """Stop the guest and write its state to ``target`` (QMP ``migrate`` to ``exec:cat``).
        The guest stays stopped until :meth:`resume`."""
        self._migrate("save", deadline, "stop", ("migrate", {
            "uri": f"exec:cat > {shlex.quote(str(target))}"}))

    def load_state(self, source: Path, deadline: Deadline) -> None:
        """Load a state saved by :meth:`save_state` into this QEMU, started with ``-incoming
        defer``; the guest is stopped, as it was saved, until :meth:`resume`."""
        self._migrate("restore", deadline, None, ("migrate-incoming", {
            "uri": f"exec:cat {shlex.quote(str(source))}"}))

    def _migrate(self, what: str, deadline: Deadline, first: str | None,
                 command: tuple[str, dict[str, object]]) -> None:
        """Run a migration command and wait for QEMU's MIGRATION event to end it."""
        qmp = self._monitor()
        try:
            qmp.settimeout(max(0.1, deadline.remaining))
            if first:
                qmp.cmd(first)
            qmp.cmd("migrate-set-capabilities",
                    capabilities=[{"capability": "events", "state": True}])
            qmp.cmd(command[0], **command[1])
            while True:
                event = qmp.pull_event(wait=max(0.1, float(deadline.remaining)))
                if event is None or event.get("event") != "MIGRATION":
                    continue
                status = event.get("data", {}).get("status")
                if status == "completed":
                    return
                if status in ("failed", "cancelled"):
                    raise GuestError(f"QEMU could not {what} the guest: migration {status}",
                                     "see QEMU's log beside the console log")
        except GuestError:
            raise
        except Exception as exc:
            raise GuestError(f"QEMU could not {what} the guest: "
                             f"{exc or type(exc).__name__}",
                             "see QEMU's log beside the console log") from exc

    def resume(self, deadline: Deadline | None = None) -> None:
        """Run a guest stopped by :meth:`save_state` or :meth:`load_state` again.

        QEMU announces a completed migration before its runstate leaves ``finish-migrate``
        (the cleanup runs after the event), and refuses ``cont`` until then ("Migration is
        not finalized yet"): that answer is retried for a moment."""
        qmp = self._monitor()
        deadline = deadline or Deadline.after(5.0)
        while True:
            try:
                qmp.cmd("cont")
                return
            except ExecuteError as exc:
                if "not finalized" not in str(exc) or deadline.expired:
                    raise GuestError(f"QEMU did not resume the guest: {exc}",
                                     "see QEMU's log beside the console log") from exc
            time.sleep(0.01)

    def _monitor(self) -> QEMUMonitorProtocol:
        if self.qmp is None or self.exited:
            raise GuestError("QEMU is not running", "boot the guest first")
        return self.qmp

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None
