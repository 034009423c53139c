"""Real QEMU, real Debian kernels, every platform: boot, groups against the prediction, both
transports, a module built with the kernel's kbuild (cross for arm64)."""

from __future__ import annotations

import re

import pytest

from harness.channels import Shell
from harness.differ import guest_profile
from harness.errors import CommandTimeout, GuestError
from harness.guest import Guest
from harness.model.build import groups_at_probe
from harness.prepare import TOPOLOGIES_DIR
from harness.pytest_plugin import GuestPool
from harness.sysfs import compare_groups, diff_snapshots, format_comparison
from harness.topology import device_bdf, predict_groups
from tests.integration.helpers import KERNELS

# What each platform's IOMMU driver prints when it comes up (drivers/iommu/intel/dmar.c and
# drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c).
IOMMU_UP = {"x86_64-vtd": r"DMAR: IOMMU enabled", "aarch64-smmuv3": r"arm-smmu-v3 \S+: ias \d+-bit"}
SPLATS = re.compile(r"WARNING:|BUG:|Oops|Call Trace:|general protection fault|KASAN")


def at_probe(g: Guest) -> bool:
    return groups_at_probe(g.config.platform, guest_profile(g))


def assert_groups_match(g: Guest, bound: tuple[str, ...] = ()) -> None:
    cmp = compare_groups(predict_groups(g.config.topology, g.config.platform, bound, at_probe(g)),
                         g.groups())
    assert cmp.ok, format_comparison(cmp)


def test_guest_runs_the_requested_kernel_with_the_iommu_on(guest_pool: GuestPool,
                                                           platform: str) -> None:
    # A guest of its own: the shared one's log holds the WARNINGs other tests raise on purpose.
    with guest_pool.fresh(platform) as guest:
        assert guest.check("uname -r").strip() == guest.config.kernel.release
        assert guest.check("uname -m").strip() == guest.config.platform.arch
        dmesg = guest.dmesg()
    assert re.search(IOMMU_UP[platform], dmesg), dmesg[-2000:]
    assert not SPLATS.search(dmesg)


# Every kernel on the default topology; the second topology on 6.1 and the newest (a boot costs
# seconds).
@pytest.mark.parametrize(("kernel", "topology"), [*((k, "default") for k in KERNELS),
                                                  ("debian:6.1", "mixed"),
                                                  (KERNELS[-1], "mixed")])
def test_groups_equal_the_prediction_before_and_after_binding(
        guest_pool: GuestPool, platform: str, kernel: str, topology: str) -> None:
    with guest_pool.fresh(platform, kernel, TOPOLOGIES_DIR / f"{topology}.toml") as g:
        assert_groups_match(g)
        before = g.groups()
        bound = g.bind_topology("pci-stub")
        assert_groups_match(g, bound)
        changes = diff_snapshots(before, g.groups())
        drivers = [c for c in changes if c.endswith("-> pci-stub")]
        joined = [c for c in changes if "added:" in c or c.endswith("joined")]
        if at_probe(g):
            assert joined and not drivers  # groups appear as the devices are probed
        else:  # every device that has a group (SMMUv3: not those behind a taken alias)
            grouped = [m for p in predict_groups(g.config.topology, g.config.platform, bound,
                                                 False) for m in p.members
                       if m.name in {d.id for d in g.config.topology.devices}]
            assert len(drivers) == len(grouped) and not joined


@pytest.fixture(params=[(t, k) for k in KERNELS for t in ("serial", "ssh")],
                ids=lambda p: f"{p[0]}-{p[1][7:]}")
def shell(request: pytest.FixtureRequest, guest_pool: GuestPool, platform: str) -> Shell:
    transport, kernel = request.param
    guest = guest_pool.get(platform, kernel)
    if transport == "serial":
        assert guest.serial is not None
        return guest.serial
    return guest.ssh


def test_exit_codes_and_streams(shell: Shell) -> None:
    for code in (0, 1, 42, 255):
        assert shell.run(f"exit {code}").exit_code == code
    r = shell.run("echo out; echo err >&2; false")
    assert (r.stdout, r.stderr, r.exit_code) == (b"out\n", b"err\n", 1)


def test_tricky_output(shell: Shell) -> None:
    assert shell.run("printf 'no newline'").stdout == b"no newline"
    assert shell.run(r"printf '\036E\036X 0\036\000\377'").stdout == b"\x1eE\x1eX 0\x1e\x00\xff"
    r = shell.run("head -c 1048576 /dev/zero | tr '\\000' x", timeout=120)
    assert r.stdout == b"x" * 1048576, first_difference(r.stdout, b"x" * 1048576)


def first_difference(got: bytes, want: bytes) -> str:
    """Where two outputs part: their lengths and the first differing offset with context."""
    at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
              min(len(got), len(want)))
    return (f"got {len(got)} bytes, want {len(want)}; first difference at offset {at}: "
            f"got {got[max(0, at - 16):at + 16]!r}, want {want[max(0, at - 16):at + 16]!r}")


def test_a_command_that_times_out(shell: Shell) -> None:
    with pytest.raises(CommandTimeout):
        shell.run("sleep 30", timeout=1.5)
    assert shell.run("echo still here").stdout == b"still here\n"


def test_sysfs_reads_agree_over_both_transports(guest: Guest) -> None:
    assert guest.serial is not None
    serial = guest.serial.run("ls /sys/kernel/iommu_groups | sort -n").stdout
    ssh = guest.ssh.run("ls /sys/kernel/iommu_groups | sort -n").stdout
    assert serial == ssh
    assert serial.split() == [str(g.id).encode() for g in guest.groups()]


@pytest.mark.parametrize("kernel", KERNELS)
def test_our_module_loads_reports_groups_and_unloads_cleanly(
        guest_pool: GuestPool, platform: str, kernel: str) -> None:
    g = guest_pool.get(platform, kernel)
    before = g.check("cat /proc/sys/kernel/tainted")
    g.run("dmesg -c > /dev/null")
    in_group = {m.bdf: grp.id for grp in g.groups() for m in grp.members}
    g.load_module("ih_smoke")
    assert "ih_smoke" in g.check("lsmod")
    g.unload_module("ih_smoke")
    log = g.check("dmesg")
    topo = g.config.topology
    assert f"ih_smoke: loaded, {len(topo.devices)} edu devices" in log
    for d in topo.devices:
        bdf = device_bdf(topo, d)
        expected = f"group {in_group[bdf]}" if bdf in in_group else "no group"
        assert f"ih_smoke: {bdf} {expected}\n" in log, log
    assert "ih_smoke: unloaded" in log
    assert not SPLATS.search(log), log
    assert "ih_smoke" not in g.check("lsmod")
    # Loading our unsigned out-of-tree module may add taint flags, nothing else goes wrong.
    assert int(g.check("cat /proc/sys/kernel/tainted")) & ~(1 << 12 | 1 << 13) == \
        int(before) & ~(1 << 12 | 1 << 13)


def test_a_module_the_guest_cannot_load_is_a_loud_error(guest: Guest) -> None:
    with pytest.raises(GuestError, match="refused module no_such_module"):
        guest.load_module("no_such_module")
