"""Saved-guest keys and the store (harness/snapshot.py), without QEMU: a key must change with
everything that decides what a restore would be, and with nothing that differs per guest."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from harness.platforms import PLATFORMS
from harness.prepare import TOPOLOGIES_DIR
from harness.qemu import LaunchSpec
from harness.snapshot import (
    INCOMING_ARGS,
    RESTORE_UNMIGRATED,
    SAVE_UNMIGRATED,
    SnapshotStore,
    canonical_argv,
    snapshots_wanted,
    state_key,
    write_meta,
)
from harness.topology import load_topology


def fake_qemu(folder: Path, version: str) -> Path:
    """An executable that answers --version like QEMU (the key reads the binary's identity)."""
    path = folder / f"qemu-{version}"
    path.write_text(f"#!/bin/sh\necho 'QEMU emulator version {version}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {"kernel": tmp_path / "vmlinux", "initrd": tmp_path / "image.cpio",
           "qemu": fake_qemu(tmp_path, "7.2.22")}
    out["kernel"].write_bytes(b"kernel")
    out["initrd"].write_bytes(b"initrd-1")
    return out


def spec(files: dict[str, Path], *, guest: str = "g1", key: str = "KEY1",
         platform: str = "x86_64-vtd", topology: str = "default") -> LaunchSpec:
    p = dataclasses.replace(PLATFORMS[platform], qemu_binary=str(files["qemu"]))
    return LaunchSpec(
        platform=p, topology=load_topology(TOPOLOGIES_DIR / f"{topology}.toml", p),
        kernel=files["kernel"], initrd=files["initrd"],
        append=(*p.cmdline, f"harness.sshkey=ssh-ed25519:{key}"), accel="tcg",
        console_log=Path(f"/out/{guest}/console.log"), qmp_socket=Path(f"/run/{guest}/qmp"),
        control_socket=Path(f"/run/{guest}/ctl"))


def test_the_canonical_argv_has_no_per_guest_path_and_no_ssh_key(files: dict[str, Path]) -> None:
    a, b = spec(files, guest="g1", key="K1"), spec(files, guest="g2", key="K2")
    assert canonical_argv(a) == canonical_argv(b)
    text = " ".join(canonical_argv(a))
    assert "/out/g1" not in text and "/run/g1" not in text and "harness.sshkey" not in text
    assert str(files["kernel"]) in text  # the kernel and initrd stay (their contents key too)


def test_guests_of_one_config_share_a_key(files: dict[str, Path]) -> None:
    assert state_key(spec(files, guest="g1", key="K1")) == \
        state_key(spec(files, guest="g2", key="K2"))


def test_a_changed_initramfs_kernel_qemu_or_argv_is_a_new_key(files: dict[str, Path],
                                                              tmp_path: Path) -> None:
    base = state_key(spec(files))
    # A module rebuilt into the image (a size of its own: the digest is cached per inode, size
    # and mtime, and two writes within one clock tick share an mtime).
    files["initrd"].write_bytes(b"initrd-two")
    rebuilt = state_key(spec(files))
    assert rebuilt != base
    files["kernel"].write_bytes(b"kernel-2")
    assert state_key(spec(files)) not in (base, rebuilt)
    newer = dict(files, qemu=fake_qemu(tmp_path, "10.0.13"))
    assert state_key(spec(newer)) != state_key(spec(files))
    assert state_key(spec(files, topology="mixed")) != state_key(spec(files))
    assert state_key(spec(files, platform="aarch64-smmuv3")) != state_key(spec(files))


def test_the_ready_commands_are_part_of_the_key(files: dict[str, Path]) -> None:
    assert state_key(spec(files), ("insmod a.ko",)) != state_key(spec(files), ("insmod b.ko",))
    assert state_key(spec(files), ("a", "b")) != state_key(spec(files), ("ab",))
    assert state_key(spec(files), ("a",), ()) != state_key(spec(files), (), ("a",))


def test_a_restore_starts_qemu_waiting_for_its_state() -> None:
    assert INCOMING_ARGS == ("-incoming", "defer")


def test_the_store_publishes_once_and_discards(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    assert store.find("k") is None
    staged = store.staging("k")
    (staged / "state").write_bytes(b"first")
    write_meta(staged, argv=["qemu"])
    saved = store.publish("k", staged)
    assert store.find("k") == saved and saved.state.read_bytes() == b"first"
    assert saved.meta == {"argv": ["qemu"]}
    # A second writer of the same key (a concurrent run) loses quietly; the first state stays.
    late = store.staging("k")
    (late / "state").write_bytes(b"second")
    write_meta(late)
    assert store.publish("k", late) == saved
    assert saved.state.read_bytes() == b"first" and not late.exists()
    store.discard("k")
    assert store.find("k") is None
    assert list(store.root.iterdir()) == []  # nothing left behind
    with store.lock("k"):
        pass


def test_states_unused_for_long_are_pruned_when_another_is_saved(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snapshots")
    for key in ("old", "used", "new"):
        staged = store.staging(key)
        write_meta(staged)
        store.publish(key, staged)
    month_ago = time.time() - 30 * 86400
    for key in ("old", "used"):
        os.utime(store.folder(key) / "meta.json", (month_ago, month_ago))
    saved = store.find("used")
    assert saved is not None
    store.touch(saved)  # restored today
    assert store.prune(keep="new") == ["old"]
    assert sorted(p.name for p in store.root.iterdir()) == ["new", "used"]
    assert store.prune(keep="new", max_age_days=-1) == ["used"]  # everything but the kept


def test_snapshots_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOMMU_HARNESS_NO_SNAPSHOT", raising=False)
    assert snapshots_wanted() and not snapshots_wanted(flag_off=True)
    monkeypatch.setenv("IOMMU_HARNESS_NO_SNAPSHOT", "1")
    assert not snapshots_wanted()
    monkeypatch.setenv("IOMMU_HARNESS_NO_SNAPSHOT", "0")
    assert snapshots_wanted()


def test_the_edu_config_copy_scripts_are_valid_shell() -> None:
    for script in (SAVE_UNMIGRATED, RESTORE_UNMIGRATED):
        r = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True,
                           check=False)
        assert r.returncode == 0, r.stderr
    assert "0x1234:0x11e8" in SAVE_UNMIGRATED  # edu's vendor:device (QEMU docs/specs/edu.rst)
