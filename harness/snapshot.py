"""Saved guests: the state of a booted, idle guest written once to the cache, and new QEMUs
started from it instead of booting.

The state is QEMU's migration stream, written with QMP ``migrate`` to ``exec:cat > FILE`` while
the guest is stopped (docs/devel/migration in QEMU; ``exec:`` runs the command through
``/bin/sh -c``), and read back by a QEMU started with the same command line plus ``-incoming
exec:cat FILE``, which loads it and runs on (autostart). The guest carries on from the instant
of the save: its kernel log, uptime, loaded modules and the control agent waiting for a command.

A state is keyed by everything that decides what a restore would be: the QEMU binary and its
version, the command line with the per-guest paths taken out, the kernel image and the initramfs
(so a changed module build, image or argv is a new key and never restores a stale state). The
SSH key the guest was booted with (on its command line) is saved beside the state.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .cache import cache_root, digest, file_digest, locked
from .errors import GuestError
from .qemu import LaunchSpec, build_argv

log = logging.getLogger(__name__)

FORMAT = "1"  # bump when what a saved guest holds changes (the agent, the ready steps)
SSH_KEY_PARAM = "harness.sshkey="
ENV_NO_SNAPSHOT = "IOMMU_HARNESS_NO_SNAPSHOT"
PRUNE_DAYS = 14.0  # a state unused this long is removed when another is saved
INCOMING_ARGS = ("-incoming", "defer")  # a QEMU that will load a state (QemuProcess.load_state)


# QEMU's edu device has no migration state (hw/misc/edu.c: its class sets no vmsd), so neither
# its registers nor its PCI config space travel with a saved guest: a restored edu has its BAR
# unassigned and its command register reset, and the guest's MMIO to it goes nowhere. The guest
# keeps a copy of each edu's config space (256 bytes: the header, and the capabilities a driver
# may have enabled) right before it is saved, and writes it back after a restore (the sysfs
# config file, Documentation/ABI/testing/sysfs-bus-pci). Our drivers poll edu, and set up no
# interrupts: its registers hold nothing between two DMAs worth keeping.
SAVE_UNMIGRATED = ("mkdir -p /dev/shm/ih-pci && for d in /sys/bus/pci/devices/*; do "
                   '[ "$(cat $d/vendor):$(cat $d/device)" = 0x1234:0x11e8 ] || continue; '
                   "head -c 256 $d/config > /dev/shm/ih-pci/${d##*/} || exit 1; done")
RESTORE_UNMIGRATED = ("for f in /dev/shm/ih-pci/*; do [ ! -e $f ] || "
                      "cat $f > /sys/bus/pci/devices/${f##*/}/config || exit 1; done")


def snapshots_wanted(flag_off: bool = False) -> bool:
    """False when ``--no-snapshot`` was given or $IOMMU_HARNESS_NO_SNAPSHOT is set (not 0)."""
    return not flag_off and os.environ.get(ENV_NO_SNAPSHOT, "") in ("", "0")


# ------------------------------------------------------------------------------------- keys

def canonical_argv(spec: LaunchSpec) -> tuple[str, ...]:
    """The command line with what differs from one guest to the next taken out: its log and
    socket paths, and the SSH key (which comes from the state)."""
    return build_argv(replace(
        spec, console_log=Path("console.log"), qmp_socket=Path("qmp.sock"),
        control_socket=Path("ctl.sock"),
        append=tuple(a for a in spec.append if not a.startswith(SSH_KEY_PARAM))))


@functools.cache
def _qemu_identity(binary: str) -> str:
    path = shutil.which(binary) or binary
    real = os.path.realpath(path)
    st = os.stat(real)
    version = subprocess.run([real, "--version"], capture_output=True, text=True,
                             check=False).stdout.splitlines()[:1]
    return f"{real} {st.st_size} {st.st_mtime_ns} {' '.join(version)}"


def qemu_identity(binary: str) -> str:
    """The QEMU binary as a key part: path, size, mtime and ``--version``. A changed QEMU
    (upgraded package) is a new key: a migration stream is only loaded by the QEMU that
    wrote it."""
    try:
        return _qemu_identity(binary)
    except OSError as exc:
        raise GuestError(f"cannot read QEMU binary {binary}: {exc}",
                         "install QEMU (make deps)") from exc


@functools.cache
def _content(path: str, inode: int, size: int, mtime_ns: int) -> str:
    return file_digest(Path(path))


def content_digest(path: Path) -> str:
    """A file's sha256, computed once per process for a given inode, size and mtime (the
    cache publishes files by rename: a rebuilt one is a new inode)."""
    st = path.stat()
    return _content(str(path), st.st_ino, st.st_size, st.st_mtime_ns)


def state_key(spec: LaunchSpec, *commands: Sequence[str]) -> str:
    """The cache key of the state a guest of ``spec`` would be saved as; ``commands``: the
    command lists that make it ready and that go with the save and the restore."""
    argv = canonical_argv(spec)
    parts = [FORMAT, qemu_identity(spec.platform.qemu_binary), str(len(argv)), *argv,
             content_digest(spec.kernel), content_digest(spec.initrd)]
    for group in commands:
        parts += [str(len(group)), *group]
    return digest(parts)


# ------------------------------------------------------------------------------------ store

@dataclass(frozen=True)
class SavedState:
    """One saved guest in the cache."""

    folder: Path

    @property
    def state(self) -> Path:
        return self.folder / "state"

    @property
    def ssh_key(self) -> Path:
        return self.folder / "ssh_key"

    @property
    def boot_log(self) -> Path:
        return self.folder / "console.log"

    def facts(self, name: str) -> dict[str, Any] | None:
        """What a reader kept beside this state under ``name`` (see :meth:`keep_facts`)."""
        try:
            doc: dict[str, Any] = json.loads((self.folder / f"facts-{name}.json").read_text())
        except (OSError, ValueError):
            return None
        return doc

    def keep_facts(self, name: str, doc: Mapping[str, object]) -> None:
        """Keep what every restore of this state shows (atomically: concurrent restores may
        write the same file)."""
        fd, tmp = tempfile.mkstemp(prefix=".facts-", dir=self.folder)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, sort_keys=True)
        os.replace(tmp, self.folder / f"facts-{name}.json")

    @property
    def meta(self) -> dict[str, object]:
        loaded: dict[str, object] = json.loads((self.folder / "meta.json").read_text())
        return loaded



@dataclass(frozen=True)
class SnapshotStore:
    """Saved guests under ``root`` (default: the cache's ``snapshots`` folder)."""

    root: Path

    @staticmethod
    def default() -> SnapshotStore:
        return SnapshotStore(cache_root() / "snapshots")

    def folder(self, key: str) -> Path:
        return self.root / key

    def find(self, key: str) -> SavedState | None:
        folder = self.folder(key)
        return SavedState(folder) if (folder / "meta.json").is_file() else None

    def lock(self, key: str) -> AbstractContextManager[None]:
        """Held while a guest of ``key`` boots and saves, so that concurrent harness runs
        wait for its state instead of booting the same guest beside it."""
        return locked(self.folder(key))

    def staging(self, key: str) -> Path:
        """A private folder to write a new state into, beside its final place."""
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.root))

    def publish(self, key: str, staged: Path) -> SavedState:
        """Make a staged folder the state of ``key`` (atomically; a state already there
        stays, and the staged copy is dropped)."""
        final = self.folder(key)
        try:
            os.rename(staged, final)
        except OSError:
            shutil.rmtree(staged, ignore_errors=True)
        self.prune(keep=key)
        return SavedState(final)

    def touch(self, saved: SavedState) -> None:
        """Note that a state was used (what :meth:`prune` goes by)."""
        with suppress(OSError):
            os.utime(saved.folder / "meta.json")

    def prune(self, keep: str, max_age_days: float = PRUNE_DAYS) -> list[str]:
        """Remove states not used for ``max_age_days`` (a kernel, image or QEMU that moved
        on leaves its old states behind, 70-85 MiB each); never ``keep``. Returns their keys."""
        if not self.root.is_dir():
            return []
        cutoff = time.time() - max_age_days * 86400
        gone = []
        for folder in self.root.iterdir():
            meta = folder / "meta.json"
            if folder.name == keep or folder.name.startswith(".") or not meta.is_file():
                continue
            with suppress(OSError):
                if meta.stat().st_mtime < cutoff:
                    self.discard(folder.name)
                    gone.append(folder.name)
        return gone

    def discard(self, key: str) -> None:
        """Remove a state that failed to restore (renamed away first: a restore of it that is
        running elsewhere keeps its open file)."""
        folder = self.folder(key)
        if folder.is_dir():
            gone = Path(tempfile.mkdtemp(prefix=f".{key}.gone.", dir=self.root))
            with suppress(OSError):
                os.rename(folder, gone / "x")
            shutil.rmtree(gone, ignore_errors=True)


def write_meta(staged: Path, **facts: object) -> None:
    (staged / "meta.json").write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
