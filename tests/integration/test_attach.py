"""The attach APIs through ih_attach on real kernels, every platform, both Debian kernels."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from harness.attach import DRIVER_DMA_API, DRIVER_OWNED, AttachCtl, TegraClient
from harness.guest import Guest
from harness.pytest_plugin import GuestPool
from tests.integration.helpers import KERNELS

EDU0, EDU1, EDU2, EDU3 = "0000:00:03.0", "0000:00:04.0", "0000:01:01.0", "0000:01:02.0"
EINVAL, EBUSY, EPERM, ENOENT = -22, -16, -1, -2
FAULT_KIND = {"x86_64-vtd": "dmar_fault", "aarch64-smmuv3": "smmu_event"}


@pytest.fixture(params=KERNELS, ids=lambda k: k[7:])
def ctl(request: pytest.FixtureRequest, guest_pool: GuestPool,
        platform: str) -> Iterator[AttachCtl]:
    """A pristine guest of the test's own: ih_attach loaded, every edu device bound to
    ih_edu_owned."""
    with guest_pool.fresh(platform, request.param) as g:
        c = AttachCtl(g)
        c.load()
        for bdf in (EDU0, EDU1, EDU2, EDU3):
            g.bind(bdf, DRIVER_OWNED)
        yield c
        assert c.op("reset").ok


def test_attach_device_on_a_singleton_then_detach_restores_the_default(ctl: AttachCtl) -> None:
    assert ctl.state(EDU0).domain == "default"
    r = ctl.batch([f"alloc d {EDU0}", f"attach_dev d {EDU0}"])
    assert [x.rc for x in r] == [0, 0]
    assert ctl.state(EDU0).domain == "@d"
    assert ctl.op(f"attach_dev d {EDU0}").rc == EBUSY  # the same domain again
    assert ctl.op(f"detach_dev d {EDU0}").ok
    assert ctl.state(EDU0).domain == "default"
    assert ctl.op("free d").ok


def test_attach_device_is_refused_on_the_bridge_group_attach_group_works(
        ctl: AttachCtl) -> None:
    r = ctl.batch([f"alloc d {EDU2}", f"attach_dev d {EDU2}", f"attach_group d {EDU2}"])
    # iommu_attach_device: -EINVAL when the group holds more than one device
    # (drivers/iommu/iommu.c: iommu_attach_device); the group API takes it.
    assert [(x.rc, x.guard) for x in r] == [(0, False), (EINVAL, False), (0, False)]
    assert ctl.state(EDU2).domain == "@d"
    assert ctl.op(f"detach_group d {EDU2}").ok
    assert ctl.state(EDU2).domain == "default"


def test_dma_ownership_claims(ctl: AttachCtl) -> None:
    r = ctl.batch([f"claim_group {EDU1} a", f"claim_group {EDU1} a", f"state {EDU1}",
                   f"alloc d {EDU1}", f"attach_dev d {EDU1}", f"detach_dev d {EDU1}",
                   f"state {EDU1}", f"release_group {EDU1}", f"state {EDU1}"])
    assert [x.rc for x in r] == [0, EPERM, 0, 0, 0, 0, 0, 0, 0]
    # Owned: the group sits on its blocking domain (an empty unmanaged domain on 6.1, the
    # static BLOCKED domain on 6.12); detach while owned returns there; release: default.
    assert r[2].get("domain") in ("blocked", "unmanaged")
    assert r[6].get("domain") == r[2].get("domain")
    assert r[8].get("domain") == "default"


def test_dma_through_a_mapped_iova_moves_the_right_bytes_and_unmapped_faults(
        ctl: AttachCtl, platform: str) -> None:
    g = ctl.guest
    r = ctl.batch([f"alloc d {EDU0}", f"attach_dev d {EDU0}", "map d 0x100000 0x2000",
                   f"dma {EDU0} d 0x100000 4095", f"dma {EDU0} d 0x101000 100",
                   f"dma {EDU0} d 0x100000 4096"])
    assert [x.rc for x in r] == [0, 0, 0, 0, 0, EINVAL]
    assert r[3].get("bytes") == "4095"
    assert r[5].guard  # more than edu's limit (see ih_attach.c: EDU_DMA_MAX)
    step = g.run_traced(f"printf 'dma_raw {EDU0} 0x900000 to_ram\\n' > "
                        "/sys/kernel/debug/ih_attach/ctl; cat /sys/kernel/debug/ih_attach/ctl")
    assert step.result.text.startswith("dma_raw 0")
    faults = [e for e in step.events if e.kind == FAULT_KIND[platform]]
    assert len(faults) == 1 and faults[0].detail("address") == "0x900000"


def test_tegra_like_client_over_singletons_and_over_the_shared_group(
        ctl: AttachCtl, platform: str) -> None:
    snapshot = ctl.guest.groups()
    groups = {m.bdf: g.id for g in snapshot for m in g.members}
    singles = TegraClient(ctl, "t1", (EDU0, EDU1))
    assert singles.setup().ok
    assert [(x.op, x.rc) for x in singles.attach(snapshot)] == [("attach_dev", 0)] * 2
    assert {ctl.state(b).domain for b in (EDU0, EDU1)} == {"@t1"}
    assert singles.map().ok
    assert [x.rc for x in singles.dma_from_each()] == [0, 0]
    # The shared group: attach_device refuses it, so the client attaches the group once.
    members = (EDU2, EDU3) if EDU3 in groups else (EDU2,)  # SMMUv3: EDU3 has no group
    shared = TegraClient(ctl, "t2", members)
    assert shared.setup().ok
    assert ctl.op(f"attach_dev t2 {EDU2}").rc == EINVAL
    attached = shared.attach(snapshot)
    assert [(x.op, x.rc) for x in attached] == [("attach_group", 0)]
    assert shared.map().ok
    assert [x.rc for x in shared.dma_from_each()] == [0] * len(members)


def test_group_members_and_unbinding(ctl: AttachCtl, platform: str) -> None:
    g = ctl.guest
    snapshot = {m.bdf: grp for grp in g.groups() for m in grp.members}
    listed = ctl.members(EDU2)
    assert listed is not None
    assert listed[0] == snapshot[EDU2].id
    assert set(listed[1]) == {m.bdf for m in snapshot[EDU2].members}
    g.unbind(EDU0)
    assert ctl.state(EDU0).driver is None
    # SMMUv3 keeps the group it gave at probe after the driver goes; VT-d had it all along.
    assert ctl.state(EDU0).group == snapshot[EDU0].id
    g.bind(EDU0, DRIVER_OWNED)


def test_map_before_any_attach(ctl: AttachCtl, platform: str) -> None:
    """VT-d builds a domain's page table at allocation. SMMUv3 on 6.1 builds it at the first
    attach (arm_smmu_domain_finalise from arm_smmu_attach_dev), so mapping into a
    never-attached domain fails with -ENODEV; 6.12 allocates for a device
    (iommu_paging_domain_alloc) and finalises at once."""
    r = ctl.batch([f"alloc d {EDU0}", "map d 0x100000 0x1000"])
    assert r[0].ok
    late = platform == "aarch64-smmuv3" and ctl.guest.config.kernel.spec == "debian:6.1"
    assert r[1].rc == (-19 if late else 0)
    assert not r[1].guard


def test_each_driver_flavour_and_what_ownership_sees(ctl: AttachCtl) -> None:
    g = ctl.guest
    g.bind(EDU1, DRIVER_DMA_API)  # a kernel DMA-API driver now counts as a group user
    assert ctl.state(EDU1).driver == DRIVER_DMA_API
    r = ctl.op(f"claim_group {EDU1} a")
    assert r.rc == EPERM  # iommu_group_claim_dma_owner: owner_cnt > 0 (drivers/iommu/iommu.c)
    g.bind(EDU1, DRIVER_OWNED)
    assert ctl.op(f"claim_group {EDU1} a").ok
    # A DMA-API driver cannot bind while the group is owned: the probe's
    # iommu_device_use_default_domain() gives -EBUSY (drivers/pci/pci-driver.c).
    bad = g.run(f"echo {DRIVER_DMA_API} > /sys/bus/pci/devices/{EDU1}/driver_override; "
                f"echo {EDU1} > /sys/bus/pci/devices/{EDU1}/driver/unbind; "
                f"echo {EDU1} > /sys/bus/pci/drivers/{DRIVER_DMA_API}/bind")
    assert bad.exit_code != 0 and b"busy" in bad.stderr.lower()
    assert ctl.op(f"release_group {EDU1}").ok
    g.bind(EDU1, DRIVER_OWNED)


def test_guards_and_garbage_never_hurt_the_kernel(ctl: AttachCtl) -> None:
    """Thousands of random and malformed lines; then the guest is alive and dmesg is clean
    (the plugin's verdict fails the test on any splat)."""
    rng = random.Random(1234)
    words = ["alloc", "free", "attach_dev", "detach_dev", "attach_group", "detach_group",
             "claim_group", "release_group", "claim_dev", "release_dev", "map", "unmap", "dma",
             "dma_raw", "state", "bogus", "", "reset"]
    args = ["d", "e", "zz", "D!", EDU0, EDU1, EDU2, EDU3, "0000:99:00.0", "0x100000", "0x1000",
            "0x900000", "-1", "18446744073709551615", "to_ram", "from_ram", "x" * 40, "\\t"]
    lines = []
    for _ in range(2000):
        n = rng.randrange(0, 6)
        lines.append(" ".join([rng.choice(words)] + [rng.choice(args) for _ in range(n)]))
    lines += ["a" * 5000, "state " + "0" * 300, "\x01\x02 state", "   "]
    for start in range(0, len(lines), 250):
        chunk = lines[start:start + 250]
        results = ctl.batch([ln.replace("dma ", "state ") for ln in chunk])
        assert len(results) == sum(1 for ln in chunk if ln.strip())
    assert ctl.op(f"state {EDU0}").ok
    ctl.unload()
    ctl.load()
    assert ctl.guest.run("echo alive").stdout == b"alive\n"


def test_unload_with_domains_attached_cleans_up(ctl: AttachCtl) -> None:
    g = ctl.guest
    r = ctl.batch([f"alloc d {EDU0}", f"attach_dev d {EDU0}", "map d 0x100000 0x1000",
                   f"claim_group {EDU1} a", f"alloc e {EDU2}", f"attach_group e {EDU2}"])
    assert all(x.ok for x in r)
    ctl.unload()
    states = g.check("for d in /sys/bus/pci/devices/*; do :; done; cat /sys/kernel/iommu_groups/"
                     "*/type | sort | uniq -c")
    assert "DMA" in states
    ctl.load()
    for bdf in (EDU0, EDU1, EDU2, EDU3):
        g.bind(bdf, DRIVER_OWNED)
    assert {ctl.state(b).domain for b in (EDU0, EDU1, EDU2)} == {"default"}


def test_load_and_unload_fifty_times(guest_pool: GuestPool, platform: str) -> None:
    g: Guest = guest_pool.get(platform)
    g.run("rmmod ih_attach 2> /dev/null")  # other tests may have left it loaded
    before = g.check("grep -E '^(Slab|MemFree):' /proc/meminfo")
    r = g.run("i=0; while [ $i -lt 50 ]; do insmod /lib/modules/$(uname -r)/extra/ih_attach.ko "
              "|| exit 1; rmmod ih_attach || exit 2; i=$((i + 1)); done", timeout=300)
    assert r.exit_code == 0, r.stderr
    assert "ih_attach" not in g.check("lsmod")
    assert g.check("ls /sys/kernel/debug | grep -c ih_attach || true").strip() == "0"
    assert before  # the verdict (no splat in 100 loads and unloads) comes from the plugin
