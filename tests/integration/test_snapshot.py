"""Saved guests on real QEMU (harness/snapshot.py): a restored guest equals the one that was
saved, restores of one state run side by side, a changed image is a new key, and a state that
does not restore falls back to a boot. Every platform."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cli, cpio
from harness.attach import AttachCtl
from harness.guest import Guest, GuestConfig
from harness.prepare import prepare
from harness.pytest_plugin import GuestPool
from harness.snapshot import SnapshotStore
from harness.sysfs import IommuGroup

# What a scenario can see of a guest's state: groups with their types and drivers, modules,
# where the kernel log stands and its last record, and each edu's PCI config header (which
# QEMU does not migrate: the harness writes it back).
FACTS = ("cut -d' ' -f1 /proc/modules | sort; echo @@; ih-kmsg -n | cut -d' ' -f1; "
         "dmesg | tail -n 1; echo @@; for d in /sys/bus/pci/devices/*; do "
         '[ "$(cat $d/device)" = 0x11e8 ] && echo ${d##*/} $(head -c 64 $d/config | od -An -tx1); '
         "done")


def facts(g: Guest) -> tuple[tuple[IommuGroup, ...], str]:
    return g.groups(), g.check(FACTS)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    """A private store for the test's states (70-90 MiB each), removed after it; the guests'
    logs stay in tmp_path."""
    yield tmp_path / "store"
    shutil.rmtree(tmp_path / "store", ignore_errors=True)


def config_with_marker(guest_pool: GuestPool, platform: str, store: Path,
                       marker: bytes) -> GuestConfig:
    """The default config with one more file in its initramfs (as a changed module source
    changes it: a new image) and a private store. The kernel unpacks concatenated archives
    (Documentation/driver-api/early-userspace/buffer-format.rst)."""
    config = prepare(guest_pool.request(platform))
    image = store.parent / f"image-{marker.decode()}.cpio"
    image.write_bytes(config.image.path.read_bytes()
                      + cpio.archive([cpio.file("etc/ih-marker", marker)]))
    return dataclasses.replace(config, image=dataclasses.replace(config.image, path=image),
                               snapshots=SnapshotStore(store))


def test_a_restored_guest_equals_the_saved_one_and_a_new_image_is_a_new_state(
        guest_pool: GuestPool, platform: str, tmp_path: Path, store: Path) -> None:
    config = config_with_marker(guest_pool, platform, store, b"one")
    with Guest(dataclasses.replace(config, out_dir=tmp_path / "a")) as saved:
        assert saved.started_from == "boot" and saved.saved_as is not None
        before = facts(saved)
    with Guest(dataclasses.replace(config, out_dir=tmp_path / "b")) as restored:
        assert restored.started_from == "restore" and restored.restored_from == saved.saved_as
        assert facts(restored) == before
        assert restored.check("cat /etc/ih-marker") == "one"
        assert "ih_attach" in before[1]  # saved ready: the module loaded
        # The boot log is kept beside the restore's own console log.
        assert "Linux version" in (restored.out_dir / "boot-console.log").read_text()
    other = config_with_marker(guest_pool, platform, store, b"two")
    with Guest(dataclasses.replace(other, out_dir=tmp_path / "c")) as changed:
        assert changed.started_from == "boot"  # never the state of the other image
        assert changed.check("cat /etc/ih-marker") == "two"
        assert changed.saved_as is not None and changed.saved_as != saved.saved_as


def test_a_state_that_does_not_restore_falls_back_to_a_boot(
        guest_pool: GuestPool, platform: str, tmp_path: Path, store: Path) -> None:
    config = config_with_marker(guest_pool, platform, store, b"bad")
    with Guest(dataclasses.replace(config, out_dir=tmp_path / "a")) as first:
        assert first.saved_as is not None
        broken = first.saved_as
    data = broken.state.read_bytes()
    broken.state.write_bytes(data[: len(data) // 2])  # cut in the middle of the RAM
    with Guest(dataclasses.replace(config, out_dir=tmp_path / "b")) as g:
        assert g.started_from == "boot"
        assert "did not restore" in g.notice and "booting instead" in g.notice
        assert g.run("echo alive").stdout == b"alive\n"
        assert g.saved_as is not None  # saved again, whole
    with Guest(dataclasses.replace(config, out_dir=tmp_path / "c")) as again:
        assert again.started_from == "restore"


def test_two_restores_of_one_state_run_side_by_side(guest_pool: GuestPool,
                                                    platform: str) -> None:
    with guest_pool.fresh(platform):
        pass  # the first guest of a kind boots and saves (unless a run before did)
    with guest_pool.fresh(platform) as a, guest_pool.fresh(platform) as b:
        assert a.started_from == b.started_from == "restore"
        assert a.restored_from == b.restored_from
        assert a.qemu is not None and b.qemu is not None and a.qemu.pid != b.qemu.pid
        assert a.out_dir != b.out_dir
        # Each has its own state: a domain allocated in one is not in the other.
        assert AttachCtl(a).op("alloc d 0000:00:03.0").ok
        assert AttachCtl(a).op("free d").ok and not AttachCtl(b).op("free d").ok
        # SSH works on a restored guest: its forward is added again, its key kept.
        assert a.ssh.run("echo over-ssh", timeout=60).stdout == b"over-ssh\n"


def test_no_snapshot_boots_each_scenario_s_guest(platform: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    scenario = str(Path(__file__).parent.parent / "scenarios" / "singleton-attach-detach.toml")
    for flag, out in (([], tmp_path / "restored"), (["--no-snapshot"], tmp_path / "booted")):
        code = cli.main(["scenario", scenario, "--platform", platform, "--out", str(out),
                         "--json", *flag])
        doc = json.loads(capsys.readouterr().out)
        assert code == 0 and doc["runs"][0]["outcome"] == "pass"
    # A scenario's guest folder: restored, its console from the restore on and the boot's
    # beside it; booted, the boot in its own console log.
    (restored,) = (tmp_path / "restored").glob("*/01-*")
    (booted,) = (tmp_path / "booted").glob("*/01-*")
    assert "Linux version" in (restored / "boot-console.log").read_text()
    assert "Linux version" not in (restored / "console.log").read_text()
    assert not (booted / "boot-console.log").exists()
    assert "Linux version" in (booted / "console.log").read_text()
