"""The reference model against the rules, table-driven; each case cites its source.

Groups as the default topology forms them (singletons 00:03.0 and 00:04.0, the bridge group
00:02.0 + 01:01.0 + 01:02.0), devices bound to a driver_managed_dma driver unless a case says
otherwise. NG is a device bound to a driver but without a group (as a device behind a bridge
on SMMUv3 whose stream ID another device took); GONE is an address with no device at all."""

from __future__ import annotations

import dataclasses

import pytest

from harness.errors import ConfigError
from harness.model import (
    DMA_API,
    NO_DRIVER,
    OWNED,
    Model,
    Outcome,
    choose_profile,
    get_profile,
    profile_for,
)
from harness.model.core import EBUSY, EINVAL, EIO, ENODEV, ENOENT, EOPNOTSUPP, EPERM, _int
from harness.modules import parse_symvers

E0, E1, BR, E2, E3 = "0000:00:03.0", "0000:00:04.0", "0000:00:02.0", "0000:01:01.0", \
    "0000:01:02.0"
NG, GONE = "0000:00:05.0", "0000:00:1e.7"
GROUPS = {2: [E0], 3: [E1], 1: [BR, E2, E3]}
BOTH = ("linux-6.1", "linux-6.12")
LINUX = (*BOTH, "linux-7.2")
RELEASE_WARN = {"linux-6.1": "iommu_group_release_dma_owner",
                "linux-6.12": "__iommu_release_dma_ownership",
                "linux-7.2": "__iommu_release_dma_ownership"}


def model(profile: str = "linux-6.1", smmu: bool = False, drivers: dict[str, str] | None = None
          ) -> Model:
    d = {E0: OWNED, E1: OWNED, E2: OWNED, E3: OWNED, BR: "none", NG: OWNED}
    d.update(drivers or {})
    return Model(get_profile(profile), smmu, GROUPS, d)


def run(m: Model, *lines: str) -> list[tuple[int, bool]]:
    return [(o.rc, o.guard) for o in (m.apply(line) for line in lines)]


CASES = [
    # (profile, steps, expected (rc, guard) per step, source)
    ("linux-6.1", [f"alloc d {E0}", f"attach_dev d {E0}"], [(0, False), (0, False)],
     "iommu.c: iommu_attach_device, singleton group"),
    ("linux-6.1", [f"alloc d {E0}", f"attach_dev d {E0}", f"attach_dev d {E0}"],
     [(0, False), (0, False), (-EBUSY, False)],
     "iommu.c: __iommu_attach_group, group->domain not default/blocking"),
    ("linux-6.1", [f"alloc d {E2}", f"attach_dev d {E2}"], [(0, False), (-EINVAL, False)],
     "iommu.c: iommu_attach_device, device count != 1"),
    ("linux-6.1", [f"alloc d {E2}", f"attach_group d {E2}"], [(0, False), (0, False)],
     "iommu.c: iommu_attach_group, any group size"),
    ("linux-6.1", [f"claim_group {E1} a", f"claim_group {E1} a"], [(0, False), (-EPERM, False)],
     "iommu.c: iommu_group_claim_dma_owner, owner_cnt != 0 even for the same owner"),
    ("linux-6.1", [f"alloc d {E1}", f"attach_dev d {E1}", f"claim_group {E1} a"],
     [(0, False), (0, False), (-EBUSY, False)],
     "iommu.c: iommu_group_claim_dma_owner, domain != default_domain"),
    ("linux-6.1", [f"claim_group {E1} a", f"alloc d {E1}", f"attach_dev d {E1}"],
     [(0, False), (0, False), (0, False)],
     "iommu.c: iommu_attach_device does not check ownership; blocking domain is core"),
    ("linux-6.1", [f"claim_dev {E1} a"], [(-EOPNOTSUPP, True)],
     "iommu_device_claim_dma_owner does not exist before 6.2"),
    ("linux-6.12", [f"claim_dev {E1} a", f"claim_dev {E1} a", f"claim_dev {E1} b"],
     [(0, False), (0, False), (-EPERM, False)],
     "iommu.c (6.12): iommu_device_claim_dma_owner, same owner counts, another is -EPERM"),
    ("linux-6.1", [f"detach_dev d {E0}"], [(-ENOENT, True)],
     "module guard: no such handle"),
    ("linux-6.1", [f"alloc d {E0}", f"detach_dev d {E0}"], [(0, False), (-ENOENT, True)],
     "module guard: iommu_detach_device would WARN (domain not attached)"),
    ("linux-6.1", [f"alloc d {E0}", f"attach_dev d {E0}", "free d"],
     [(0, False), (0, False), (-EBUSY, True)], "module guard: freeing an attached domain"),
    ("linux-6.1", [f"release_group {E1}"], [(-ENOENT, True)],
     "module guard: iommu_group_release_dma_owner WARNs without an owner"),
    ("proposal-2022", [f"alloc d {E2}", f"attach_dev d {E2}", f"attach_dev d {E3}"],
     [(0, False), (0, False), (0, False)],
     "3/8: multi-device group attach with driver_managed_dma devices, shared domain"),
    ("proposal-2022", [f"alloc d {E2}", f"alloc e {E2}", f"attach_dev d {E2}",
                       f"attach_dev e {E3}"],
     [(0, False), (0, False), (0, False), (-EPERM, False)],
     "3/8: a second domain in an attached group is -EPERM"),
    ("proposal-2022-alt", [f"alloc d {E2}", f"alloc e {E2}", f"attach_dev d {E2}",
                           f"attach_dev e {E3}"],
     [(0, False), (0, False), (0, False), (-EBUSY, False)],
     "review alternative: the same case is -EBUSY"),
    # ---------------------------------------------------------------- raw_detach_dev
    ("linux-6.1", [f"raw_detach_dev a {E0}"], [(-ENOENT, True)],
     "module guard: raw_detach_dev still needs a known handle"),
    ("linux-6.1", [f"alloc a {E0}", f"raw_detach_dev a {GONE}"], [(0, False), (-ENODEV, True)],
     "module guard: raw_detach_dev still needs a device"),
    ("linux-6.1", [f"alloc a {E0}", f"raw_detach_dev a {E0}", f"attach_dev a {E0}"],
     [(0, False), (0, False), (0, False)],
     "iommu.c: iommu_detach_device, WARN_ON(domain != group->domain) returns void: rc 0, "
     "nothing changes"),
    ("linux-6.12", [f"alloc a {E0}", f"raw_detach_dev a {E0}"], [(0, False), (0, False)],
     "iommu.c (6.12): iommu_detach_device, WARN_ON(domain != group->domain), rc 0"),
    ("linux-6.1", [f"alloc a {E0}", f"raw_detach_dev a {NG}"], [(0, False), (0, False)],
     "iommu.c: iommu_detach_device, no group: returns at once"),
    ("linux-6.12", [f"alloc a {E0}", f"attach_dev a {E0}", f"raw_detach_dev a {E0}",
                    f"detach_dev a {E0}", "free a"],
     [(0, False), (0, False), (0, False), (-ENOENT, True), (0, False)],
     "iommu.c: iommu_detach_device of the attached domain detaches; resync_group forgets it"),
    ("linux-6.1", [f"alloc a {E2}", f"attach_group a {E2}", f"raw_detach_dev a {E2}",
                   f"detach_group a {E2}"],
     [(0, False), (0, False), (0, False), (0, False)],
     "iommu.c: iommu_detach_device, WARN_ON(device count != 1): the group stays attached"),
    # ---------------------------------------------------------------- raw_detach_group
    ("linux-6.1", [f"alloc a {E2}", f"alloc b {E2}", f"attach_group a {E2}",
                   f"raw_detach_group b {E2}", "free a", f"attach_group b {E2}"],
     [(0, False)] * 6,
     "iommu.c: iommu_detach_group → __iommu_group_set_core_domain, whatever is attached"),
    ("linux-6.12", [f"alloc a {E2}", f"attach_group a {E2}", f"raw_detach_group a {E2}",
                    f"detach_group a {E2}"],
     [(0, False), (0, False), (0, False), (-ENOENT, True)],
     "iommu.c (6.12): iommu_detach_group; the module forgets the attachment"),
    ("linux-6.1", [f"alloc a {E0}", f"raw_detach_group a {NG}"], [(0, False), (-ENODEV, True)],
     "module guard: iommu_detach_group needs a group"),
    ("linux-6.12", [f"alloc a {E1}", f"claim_group {E1} o", f"attach_group a {E1}",
                    f"raw_detach_group a {E1}", f"attach_group a {E1}"],
     [(0, False)] * 5,
     "iommu.c: __iommu_group_set_core_domain, owned: back to blocking, attachable again"),
    # ---------------------------------------------------------------- raw_release_group
    ("linux-6.1", [f"raw_release_group {E1}", f"claim_group {E1} o"], [(0, False), (0, False)],
     "iommu.c: iommu_group_release_dma_owner, WARN_ON(!owner_cnt) returns void: rc 0"),
    ("linux-6.12", [f"raw_release_group {E1}", f"claim_group {E1} o"],
     [(0, False), (0, False)],
     "iommu.c (6.12): __iommu_release_dma_ownership, WARN_ON(!owner_cnt), rc 0"),
    ("linux-6.1", [f"claim_group {E1} o", f"raw_release_group {E1}", f"release_group {E1}",
                   f"claim_group {E1} p"],
     [(0, False), (0, False), (-ENOENT, True), (0, False)],
     "iommu.c: iommu_group_release_dma_owner releases; resync_group forgets the claim"),
    ("linux-6.12", [f"claim_dev {E1} o", f"claim_dev {E1} o", f"raw_release_group {E1}",
                    f"release_dev {E1}", f"claim_group {E1} p"],
     [(0, False), (0, False), (0, False), (-ENOENT, True), (0, False)],
     "iommu.c (6.12): iommu_group_release_dma_owner drops every device claim at once"),
    ("linux-6.1", [f"raw_release_group {NG}"], [(-ENODEV, True)],
     "module guard: raw_release_group needs a group"),
    ("linux-6.12", [f"raw_release_group {GONE}"], [(-ENODEV, True)],
     "module guard: raw_release_group needs a device"),
    # ---------------------------------------------------------------- replace
    ("linux-6.1", [f"alloc a {E0}", f"replace a {E0}"], [(0, False), (-EOPNOTSUPP, True)],
     "iommu_group_replace_domain is not exported before 6.6 (IOMMUFD_INTERNAL)"),
    ("linux-6.1", [f"alloc a {E0}", f"replace a {NG}"], [(0, False), (-ENODEV, True)],
     "module guard: replace checks for a group before whether the kernel exports it"),
    ("linux-6.12", [f"replace a {E0}"], [(-ENOENT, True)], "module guard: replace, no handle"),
    ("linux-6.12", [f"alloc a {E0}", f"replace a {NG}"], [(0, False), (-ENODEV, True)],
     "module guard: replace needs a group"),
    ("linux-6.12", [f"alloc a {E2}", f"alloc b {E2}", f"attach_group a {E2}", f"replace b {E2}",
                    "free a", f"detach_group b {E2}", "free b"],
     [(0, False)] * 7,
     "iommu.c (6.12): iommu_group_replace_domain → __iommu_group_set_domain, no check of the "
     "current domain; the module forgets the old attachment"),
    ("linux-6.12", [f"alloc a {E2}", f"replace a {E2}", f"detach_group a {E2}"],
     [(0, False), (0, False), (0, False)],
     "iommu.c (6.12): iommu_group_replace_domain from the default domain, any group size"),
    ("linux-6.12", [f"alloc a {E1}", f"claim_group {E1} o", f"replace a {E1}"],
     [(0, False)] * 3,
     "iommu.c (6.12): iommu_group_replace_domain, no ownership check"),
    ("linux-6.12", [f"alloc a {E2}", f"attach_group a {E2}", f"replace a {E2}",
                    f"detach_group a {E2}", "free a"],
     [(0, False)] * 5,
     "iommu.c (6.12): __iommu_group_set_domain, same domain is a no-op; one hold"),
    # ---------------------------------------------------------------- PASID
    ("linux-6.1", [f"alloc a {E0}", f"attach_pasid a {E0} 1", f"detach_pasid a {E0} 1"],
     [(0, False), (-EOPNOTSUPP, True), (-EOPNOTSUPP, True)],
     "iommu_attach_device_pasid with an attach handle does not exist in 6.1"),
    ("linux-6.12", [f"alloc a {E0}", f"attach_pasid a {E0} 1", f"attach_pasid a {E0} 1",
                    f"detach_pasid a {E0} 1", f"detach_pasid a {E0} 1"],
     [(0, False), (0, False), (-EBUSY, False), (0, False), (-ENOENT, True)],
     "iommu.c (6.12): iommu_attach_device_pasid, xa_insert into pasid_array: -EBUSY"),
    ("linux-6.12", [f"alloc a {E0}", f"attach_pasid a {E0} 0"], [(0, False), (-EINVAL, False)],
     "iommu.c (6.12): iommu_attach_device_pasid, IOMMU_NO_PASID"),
    ("linux-6.12", [f"alloc a {E0}", f"attach_pasid a {NG} 1"], [(0, False), (-ENODEV, False)],
     "iommu.c (6.12): iommu_attach_device_pasid, no group"),
    ("linux-6.12", [f"alloc a {E0}", f"attach_pasid a {E0} x", f"attach_pasid a {E0} 0x100000000",
                    f"attach_pasid b {E0} 1", f"attach_pasid a {GONE} 1"],
     [(0, False), (-EINVAL, True), (-EINVAL, True), (-ENOENT, True), (-ENODEV, True)],
     "module guard: kstrtou32, handle and device checks"),
    ("linux-6.12", [f"alloc a {E2}", f"attach_pasid a {E2} 7", f"attach_pasid a {E3} 7",
                    f"detach_pasid a {E3} 7"],
     [(0, False), (0, False), (-EBUSY, False), (0, False)],
     "iommu.c (6.12): the pasid_array is the group's, not the device's"),
    ("linux-6.12", [f"alloc a {E0}", f"alloc b {E0}", f"attach_pasid a {E0} 1",
                    f"detach_pasid b {E0} 1", "free a"],
     [(0, False), (0, False), (0, False), (-ENOENT, True), (-EBUSY, True)],
     "module guard: detach only the PASID attachment it made; free of a domain in use"),
    ("linux-6.12", [f"alloc a {E0}", f"attach_pasid a {E0} 1", f"claim_group {E0} o",
                    f"claim_dev {E0} o"],
     [(0, False), (0, False), (-EBUSY, False), (-EBUSY, False)],
     "iommu.c (6.12): __iommu_take_dma_ownership, -EBUSY with PASIDs attached"),
    ("linux-6.12", [f"claim_dev {E1} o", f"alloc a {E1}", f"attach_pasid a {E1} 1",
                    f"claim_dev {E1} o", f"claim_dev {E1} p"],
     [(0, False), (0, False), (0, False), (0, False), (-EPERM, False)],
     "iommu.c (6.12): iommu_device_claim_dma_owner, a counted group only counts up"),
    ("linux-6.12", [f"alloc a {E0}", f"claim_group {E0} o", f"attach_pasid a {E0} 2",
                    f"release_group {E0}", f"detach_pasid a {E0} 2", f"release_group {E0}"],
     [(0, False), (0, False), (0, False), (-EBUSY, True), (0, False), (0, False)],
     "module guard: __iommu_release_dma_ownership WARNs with PASIDs attached"),
    ("linux-6.12", [f"alloc a {E0}", f"claim_dev {E0} o", f"attach_pasid a {E0} 2",
                    f"release_dev {E0}"],
     [(0, False), (0, False), (0, False), (-EBUSY, True)],
     "module guard: iommu_device_release_dma_owner WARNs with PASIDs attached"),
    ("linux-6.12", [f"alloc a {E0}", f"claim_group {E0} o", f"attach_pasid a {E0} 2",
                    f"raw_release_group {E0}", f"claim_group {E0} p"],
     [(0, False), (0, False), (0, False), (0, False), (-EPERM, False)],
     "iommu.c (6.12): __iommu_release_dma_ownership WARNs with PASIDs and keeps the owner"),
    # ---------------------------------------------------------------- sysfs type
    ("linux-6.1", [f"set_type {E0} identity"], [(-EBUSY, False)],
     "iommu.c: iommu_group_store_type, device still bound to a driver"),
    ("linux-6.1", [f"set_type {E0} DMA"], [(-EBUSY, False)],
     "iommu.c: iommu_group_store_type checks the driver before the type"),
    ("linux-6.1", [f"set_type {E0} DMA-FQ", f"set_type {E0} DMA-FQ", f"set_type {E0} DMA"],
     [(0, False), (-EBUSY, False), (-EBUSY, False)],
     "iommu.c: iommu_group_store_type, only DMA → DMA-FQ while bound"),
    ("linux-6.1", [f"set_type {E2} DMA-FQ"], [(-EINVAL, False)],
     "iommu.c: iommu_group_store_type, more than one device in the group"),
    ("linux-6.1", [f"set_type {E0} bogus", f"set_type {E0} dma"],
     [(-EINVAL, False), (-EINVAL, False)],
     "iommu.c: iommu_group_store_type, sysfs_streq of the four names only"),
    ("linux-6.1", [f"set_type {NG} identity"], [(-ENOENT, False)],
     "sysfs: no iommu_group link, the type file does not exist"),
    ("linux-6.12", [f"set_type {E0} identity", f"set_type {E0} DMA", f"set_type {E0} auto"],
     [(0, False)] * 3,
     "iommu.c (6.12): iommu_group_store_type, a driver_managed_dma driver does not count"),
    ("linux-6.12", [f"set_type {E2} identity"], [(0, False)],
     "iommu.c (6.12): iommu_group_store_type, any group size"),
    ("linux-6.12", [f"claim_group {E1} o", f"set_type {E1} identity", f"set_type {E1} DMA-FQ",
                    f"set_type {E1} DMA"],
     [(0, False), (-EPERM, False), (0, False), (-EPERM, False)],
     "iommu.c (6.12): iommu_group_store_type, owner_cnt → -EPERM after the DMA-FQ shortcut"),
    ("linux-6.12", [f"alloc d {E0}", f"attach_group d {E0}", f"set_type {E0} identity",
                    f"detach_group d {E0}"],
     [(0, False), (0, False), (0, False), (-ENOENT, True)],
     "iommu.c (6.12): iommu_setup_default_domain moves an attached group to the new default"),
    ("linux-6.12", [f"set_type {E0} bogus", f"set_type {NG} DMA"],
     [(-EINVAL, False), (-ENOENT, False)],
     "iommu.c (6.12): iommu_group_store_type, unknown name; no group, no file"),
    ("linux-6.12", [f"set_type {E0}", f"set_type {E0} DMA extra"],
     [(-EINVAL, True), (-EINVAL, True)], "model: a set_type line of the wrong arity"),
]

# Cases with other drivers bound: (profile, drivers, steps, expected, source).
DRIVER_CASES = [
    ("linux-6.1", {E0: NO_DRIVER},
     [f"set_type {E0} identity", f"set_type {E0} DMA-FQ", f"set_type {E0} DMA",
      f"set_type {E0} auto"],
     [(0, False)] * 4,
     "iommu.c: iommu_change_dev_def_domain, a singleton group with no driver"),
    ("linux-6.1", {E0: NO_DRIVER},
     [f"alloc d {E0}", f"attach_group d {E0}", f"set_type {E0} identity",
      f"set_type {E0} DMA-FQ", f"detach_group d {E0}", f"set_type {E0} identity"],
     [(0, False), (0, False), (-EBUSY, False), (-EBUSY, False), (0, False), (0, False)],
     "iommu.c: iommu_change_dev_def_domain, -EBUSY off the default domain, before the "
     "DMA-FQ shortcut"),
    ("linux-6.1", {E2: NO_DRIVER, E3: NO_DRIVER}, [f"set_type {E2} identity"],
     [(-EINVAL, False)], "iommu.c: iommu_group_store_type, more than one device, unbound"),
    ("linux-6.1", {E1: DMA_API}, [f"raw_release_group {E1}", f"claim_group {E1} o"],
     [(0, False), (-EPERM, False)],
     "iommu.c: iommu_group_release_dma_owner, WARN_ON(!owner): the driver's count stays"),
    ("linux-6.12", {E1: DMA_API},
     [f"set_type {E1} identity", f"set_type {E1} DMA-FQ", f"set_type {E1} DMA",
      f"set_type {E1} auto"],
     [(-EPERM, False), (0, False), (-EPERM, False), (-EPERM, False)],
     "iommu.c (6.12): iommu_group_store_type, a DMA-API driver counts; auto is not DMA-FQ"),
    ("linux-6.12", {E3: DMA_API}, [f"set_type {E2} identity"], [(-EPERM, False)],
     "iommu.c (6.12): iommu_group_store_type, another member's DMA-API driver counts"),
    ("linux-6.12", {E1: DMA_API}, [f"raw_release_group {E1}", f"claim_dev {E1} o"],
     [(0, False), (-EPERM, False)],
     "iommu.c (6.12): __iommu_release_dma_ownership, WARN_ON(!owner): the count stays"),
]


@pytest.mark.parametrize(("profile", "steps", "expected", "source"), CASES,
                         ids=[c[3] for c in CASES])
def test_rules(profile: str, steps: list[str], expected: list[tuple[int, bool]],
               source: str) -> None:
    assert run(model(profile), *steps) == expected, source


@pytest.mark.parametrize(("profile", "drivers", "steps", "expected", "source"), DRIVER_CASES,
                         ids=[c[4] for c in DRIVER_CASES])
def test_rules_with_other_drivers(profile: str, drivers: dict[str, str], steps: list[str],
                                  expected: list[tuple[int, bool]], source: str) -> None:
    assert run(model(profile, drivers=drivers), *steps) == expected, source


def test_only_the_raw_operations_predict_a_warn() -> None:
    for profile, steps, _, source in CASES:
        m = model(profile)
        for line in steps:
            if not line.startswith("raw_"):
                assert m.apply(line).warn == "", (source, line)
            else:
                m.apply(line)


def test_a_dma_api_driver_blocks_claims_and_multi_device_attach_under_the_proposal() -> None:
    m = model("linux-6.1", drivers={E1: DMA_API})
    assert run(m, f"claim_group {E1} a") == [(-EPERM, False)]
    p = model("proposal-2022", drivers={E3: DMA_API})
    assert run(p, f"alloc d {E2}", f"attach_dev d {E2}") == [(0, False), (-EBUSY, False)]


def test_detach_returns_to_default_or_blocking() -> None:
    m = model("linux-6.1")
    run(m, f"alloc d {E1}", f"attach_dev d {E1}")
    assert m.domain_of(E1) == "@d"
    run(m, f"detach_dev d {E1}")
    assert m.domain_of(E1) == "default"
    run(m, f"claim_group {E1} a", f"attach_dev d {E1}", f"detach_dev d {E1}")
    assert m.domain_of(E1) == "unmanaged"  # 6.1's blocking domain is an empty UNMANAGED one
    n = model("linux-6.12")
    run(n, f"alloc d {E1}", f"claim_group {E1} a")
    assert n.domain_of(E1) == "blocked"
    run(n, f"release_group {E1}")
    assert n.domain_of(E1) == "default"


def test_smmu_map_before_attach_differs_by_version() -> None:
    assert run(model("linux-6.1", smmu=True), f"alloc d {E0}", "map d 0x1000 0x1000") == \
        [(0, False), (-ENODEV, False)]
    assert run(model("linux-6.12", smmu=True), f"alloc d {E0}", "map d 0x1000 0x1000") == \
        [(0, False), (0, False)]
    assert run(model("linux-6.1"), f"alloc d {E0}", "map d 0x1000 0x1000") == [(0, False)] * 2


def test_mapping_over_a_live_mapping_is_guarded() -> None:
    m = model()
    assert run(m, f"alloc d {E0}", "map d 0x1000 0x2000", "map d 0x2000 0x1000",
               "map d 0x3000 0x1000") == [(0, False), (0, False), (-17, True), (0, False)]


def test_profiles_differ_exactly_where_the_sources_do() -> None:
    a, b = get_profile("linux-6.1"), get_profile("linux-6.12")
    differ = {f for f in ("blocking_type", "has_device_claim", "alloc_needs_iommu",
                          "smmu_finalise_at_attach", "attach_device_rule")
              if getattr(a, f) != getattr(b, f)}
    assert differ == {"blocking_type", "has_device_claim", "alloc_needs_iommu",
                      "smmu_finalise_at_attach"}
    p = get_profile("proposal-2022")
    assert {f for f in ("blocking_type", "has_device_claim", "alloc_needs_iommu",
                        "smmu_finalise_at_attach") if getattr(a, f) != getattr(p, f)} == set()


EXPORTS_612 = ("iommu_device_claim_dma_owner", "iommu_group_replace_domain",
               "iommu_attach_device_pasid")


def test_profile_from_release_and_exports() -> None:
    assert profile_for("6.1.0-56-amd64", []).name == "linux-6.1"
    assert profile_for("6.12.117+deb12-arm64", EXPORTS_612).name == "linux-6.12"
    with pytest.raises(ConfigError, match="does not export"):
        profile_for("6.12.117+deb12-amd64", [])
    with pytest.raises(ConfigError, match="no model profile"):
        profile_for("5.10.0-1-amd64", [])


@pytest.mark.parametrize("symbol", EXPORTS_612)
def test_profile_for_names_the_symbol_that_does_not_fit(symbol: str) -> None:
    with pytest.raises(ConfigError, match=f"{symbol} missing"):
        profile_for("6.12.117+deb12-amd64", [s for s in EXPORTS_612 if s != symbol])
    with pytest.raises(ConfigError, match=f"{symbol} present"):
        profile_for("6.1.0-56-amd64", [symbol])  # a backport: the 6.1 profile would be wrong


def test_garbage_operations_are_guarded_not_raised() -> None:
    m = model()
    for line in ["bogus", "alloc", "map d x y", f"alloc D! {E0}", "unmap d notanumber"]:
        assert m.apply(line).guard


# ------------------------------------------------------------------ WARN predictions

@pytest.mark.parametrize("profile", LINUX)
def test_warns_name_the_function_that_warns(profile: str) -> None:
    m = model(profile)
    assert m.apply(f"raw_release_group {E1}") == Outcome(0, warn=RELEASE_WARN[profile])
    assert m.domain_of(E1) == "default"
    m.apply(f"alloc a {E0}")
    assert m.apply(f"raw_detach_dev a {E0}") == Outcome(0, warn="iommu_detach_device")
    assert m.domain_of(E0) == "default"
    # The right domain, but a group of three: WARN_ON(device count != 1), still attached.
    assert run(m, f"alloc b {E2}", f"attach_group b {E2}") == [(0, False)] * 2
    assert m.apply(f"raw_detach_dev b {E2}") == Outcome(0, warn="iommu_detach_device")
    assert (m.domain_of(E2), m.domain_of(E3)) == ("@b", "@b")
    # Another domain than the attached one on a singleton: WARN, the attached one stays.
    assert run(m, f"attach_dev a {E0}", f"alloc c {E0}") == [(0, False)] * 2
    assert m.apply(f"raw_detach_dev c {E0}") == Outcome(0, warn="iommu_detach_device")
    assert m.domain_of(E0) == "@a"
    assert run(m, f"detach_dev a {E0}") == [(0, False)]  # the module still knows it


def test_the_release_warn_differs_by_version_only_in_its_name() -> None:
    assert get_profile("linux-6.1").release_warn == "iommu_group_release_dma_owner"
    assert get_profile("linux-6.12").release_warn == "__iommu_release_dma_ownership"
    with_dma_api = {p: model(p, drivers={E1: DMA_API}) for p in BOTH}
    for p, m in with_dma_api.items():  # counted by a driver, but no owner
        assert m.apply(f"raw_release_group {E1}") == Outcome(0, warn=RELEASE_WARN[p])
        assert m.state.groups[3].owner_cnt == 1


def test_a_release_with_pasids_attached_warns_and_keeps_the_owner() -> None:
    m = model("linux-6.12")
    assert run(m, f"alloc a {E0}", f"claim_group {E0} o", f"attach_pasid a {E0} 3") == \
        [(0, False)] * 3
    assert m.apply(f"raw_release_group {E0}") == \
        Outcome(0, warn="__iommu_release_dma_ownership")
    g = m.state.groups[2]
    assert (g.owner, g.owner_cnt, m.domain_of(E0)) == ("o", 1, "blocked")
    assert run(m, f"release_group {E0}") == [(-EBUSY, True)]  # the claim is still the module's
    assert run(m, f"detach_pasid a {E0} 3", f"release_group {E0}") == [(0, False)] * 2
    assert m.domain_of(E0) == "default"


@pytest.mark.parametrize("profile", LINUX)
def test_no_warn_where_the_kernel_does_not_warn(profile: str) -> None:
    m = model(profile)
    # iommu_detach_device of the attached domain on a singleton group: a real detach.
    assert run(m, f"alloc a {E0}", f"attach_dev a {E0}") == [(0, False)] * 2
    assert m.apply(f"raw_detach_dev a {E0}") == Outcome.ok()
    assert m.domain_of(E0) == "default"
    # iommu_detach_group with a domain that is not the attached one: detaches that one.
    assert run(m, f"alloc b {E2}", f"alloc c {E2}", f"attach_group b {E2}") == [(0, False)] * 3
    assert m.apply(f"raw_detach_group c {E2}") == Outcome.ok()
    assert {m.domain_of(d) for d in (BR, E2, E3)} == {"default"}
    # iommu_detach_group of a group nothing is attached to: no check, nothing to WARN about.
    assert m.apply(f"raw_detach_group c {E2}") == Outcome.ok()
    # A device without a group: iommu_detach_device returns at once.
    assert m.apply(f"raw_detach_dev a {NG}") == Outcome.ok()
    # iommu_group_release_dma_owner of a group the module claimed.
    assert run(m, f"claim_group {E1} o") == [(0, False)]
    assert m.apply(f"raw_release_group {E1}") == Outcome.ok()
    assert m.domain_of(E1) == "default"


@pytest.mark.parametrize("profile", LINUX)
def test_raw_detach_of_an_owned_group_goes_back_to_blocking(profile: str) -> None:
    m = model(profile)
    blocking = get_profile(profile).blocking_name()
    assert run(m, f"alloc a {E1}", f"claim_group {E1} o", f"attach_dev a {E1}") == \
        [(0, False)] * 3
    assert m.apply(f"raw_detach_dev a {E1}") == Outcome.ok()
    assert m.domain_of(E1) == blocking
    assert run(m, f"attach_group a {E1}") == [(0, False)]
    assert m.apply(f"raw_detach_group a {E1}") == Outcome.ok()
    assert m.domain_of(E1) == blocking
    # The claim survives the resync (somebody still counts): the guarded release works.
    assert run(m, "free a", f"release_group {E1}") == [(0, False)] * 2
    assert m.domain_of(E1) == "default"


# ------------------------------------------------------------------ resync

@pytest.mark.parametrize("profile", LINUX)
def test_resync_after_raw_detach_group_frees_the_old_domain(profile: str) -> None:
    m = model(profile)
    assert run(m, f"alloc a {E2}", f"attach_group a {E2}", "free a") == \
        [(0, False), (0, False), (-EBUSY, True)]
    assert m.apply(f"raw_detach_group a {E2}") == Outcome.ok()
    assert m.state.holds == []
    assert run(m, "free a") == [(0, False)]


@pytest.mark.parametrize("profile", LINUX)
def test_resync_after_raw_release_forgets_claims_and_moved_attachments(profile: str) -> None:
    m = model(profile)
    assert run(m, f"claim_group {E1} o", f"alloc a {E1}", f"attach_dev a {E1}") == \
        [(0, False)] * 3
    assert m.apply(f"raw_release_group {E1}") == Outcome.ok()
    assert m.domain_of(E1) == "default"
    assert m.state.holds == []
    assert run(m, "free a", f"release_group {E1}") == [(0, False), (-ENOENT, True)]


def test_resync_keeps_pasid_attachments() -> None:
    m = model("linux-6.12")
    assert run(m, f"alloc a {E2}", f"alloc b {E2}", f"attach_pasid a {E2} 1",
               f"attach_group b {E2}") == [(0, False)] * 4
    assert m.apply(f"raw_detach_group b {E2}") == Outcome.ok()
    assert [h.kind for h in m.state.holds] == ["pasid"]
    assert m.state.groups[1].pasids == {1: "a"}
    assert run(m, "free b", "free a", f"detach_pasid a {E2} 1", "free a") == \
        [(0, False), (-EBUSY, True), (0, False), (0, False)]


def test_replace_forgets_the_replaced_attachment() -> None:
    m = model("linux-6.12")
    assert run(m, f"alloc a {E0}", f"alloc b {E0}", f"attach_dev a {E0}", f"replace b {E0}") \
        == [(0, False)] * 4
    assert m.domain_of(E0) == "@b"
    assert [(h.kind, h.domain) for h in m.state.holds] == [("attach_group", "b")]
    assert run(m, "free a", f"detach_dev b {E0}", f"detach_group b {E0}") == \
        [(0, False), (-ENOENT, True), (0, False)]


# ------------------------------------------------------------------ sysfs type

def test_set_type_changes_the_type_and_the_default_domain_6_1() -> None:
    m = model("linux-6.1", drivers={E0: NO_DRIVER})
    assert (m.type_of(E0), m.domain_of(E0)) == ("DMA", "default")
    assert run(m, f"set_type {E0} identity") == [(0, False)]
    assert (m.type_of(E0), m.domain_of(E0)) == ("identity", "identity")
    assert (m.type_of(E1), m.domain_of(E1)) == ("DMA", "default")  # other groups untouched
    assert run(m, f"set_type {E0} DMA-FQ") == [(0, False)]
    assert (m.type_of(E0), m.domain_of(E0)) == ("DMA-FQ", "default")
    # A refused write changes nothing.
    assert run(m, f"set_type {E1} identity") == [(-EBUSY, False)]
    assert m.type_of(E1) == "DMA"


def test_set_type_moves_an_attached_group_to_the_new_default_6_12() -> None:
    m = model("linux-6.12")
    assert run(m, f"alloc d {E0}", f"attach_group d {E0}") == [(0, False)] * 2
    assert run(m, f"set_type {E0} DMA") == [(0, False)]  # the same type: nothing moves
    assert m.domain_of(E0) == "@d"
    assert run(m, f"set_type {E0} DMA-FQ") == [(0, False)]  # in place: nothing moves
    assert (m.type_of(E0), m.domain_of(E0)) == ("DMA-FQ", "@d")
    assert run(m, f"set_type {E0} identity") == [(0, False)]
    assert (m.type_of(E0), m.domain_of(E0)) == ("identity", "identity")
    # The module still holds the attachment the kernel dropped: the domain is not freed.
    assert run(m, "free d") == [(-EBUSY, True)]


def test_set_type_of_a_multi_device_group_types_every_member_6_12() -> None:
    m = model("linux-6.12")
    assert run(m, f"set_type {E3} identity") == [(0, False)]
    assert {d: m.type_of(d) for d in (BR, E2, E3, E0)} == \
        {BR: "identity", E2: "identity", E3: "identity", E0: "DMA"}
    assert {m.domain_of(d) for d in (BR, E2, E3)} == {"identity"}


@pytest.mark.parametrize("profile", LINUX)
def test_auto_asks_for_the_kernels_default_type(profile: str) -> None:
    drivers = {E0: NO_DRIVER, E1: OWNED, E2: OWNED, E3: OWNED, BR: NO_DRIVER, NG: OWNED}
    m = Model(get_profile(profile), False, GROUPS, drivers, types={2: "identity"},
              auto_type="DMA-FQ")
    assert (m.type_of(E0), m.type_of(E1), m.type_of(E2)) == ("identity", "DMA-FQ", "DMA-FQ")
    assert m.domain_of(E0) == "identity"
    assert run(m, f"set_type {E0} auto") == [(0, False)]
    assert (m.type_of(E0), m.domain_of(E0)) == ("DMA-FQ", "default")
    n = Model(get_profile(profile), False, GROUPS, drivers, auto_type="identity")
    assert run(n, f"set_type {E0} auto") == [(0, False)]
    assert n.type_of(E0) == "identity"


@pytest.mark.parametrize("profile", LINUX)
def test_type_reads_without_a_group_and_type_writes_outlive_a_reset(profile: str) -> None:
    m = model(profile, drivers={E0: NO_DRIVER})
    assert (m.type_of(NG), m.domain_of(NG)) == ("none", "none")
    assert run(m, f"set_type {E0} identity", "reset") == [(0, False)] * 2
    assert (m.type_of(E0), m.domain_of(E0)) == ("identity", "identity")


# ------------------------------------------------------------------ profiles

def test_linux_profiles_differ_in_exactly_the_expected_fields() -> None:
    a = dataclasses.asdict(get_profile("linux-6.1"))
    b = dataclasses.asdict(get_profile("linux-6.12"))
    assert a.keys() == b.keys()
    assert {f for f in a if a[f] != b[f]} == {
        "name", "description", "blocking_type", "has_device_claim", "alloc_needs_iommu",
        "smmu_finalise_at_attach", "type_rule", "has_replace", "has_pasid", "has_vfio_cdev",
        "release_warn", "alloc_symbol", "pasid_checks", "group_handle_rule"}
    # 7.2 is 6.12 but for replace (gone), the alloc symbol and facts edu cannot reach.
    c = dataclasses.asdict(get_profile("linux-7.2"))
    assert {f for f in b if b[f] != c[f]} == {
        "name", "description", "has_replace", "alloc_symbol", "pasid_checks",
        "group_handle_rule", "reset_parking", "smmu_groups_need_driver"}
    # The proposals are 6.1 with another attach rule, nothing else.
    for name in ("proposal-2022", "proposal-2022-alt"):
        p = dataclasses.asdict(get_profile(name))
        assert {f for f in a if a[f] != p[f]} == {"name", "description", "attach_device_rule"}


# ------------------------------------------------------------------ numbers

@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("7", 7), ("+7", 7), ("010", 8), ("0x10", 16), ("0X1f", 31),
    ("0x", None), ("08", None), ("1_0", None), ("-0", None), ("", None), (" 1", None),
    (str(1 << 64), None), (hex((1 << 64) - 1), (1 << 64) - 1),
])
def test_numbers_parse_as_kstrtoul_base_0(text: str, value: int | None) -> None:
    # lib/kstrtox.c: _parse_integer_fixup_radix and kstrtoull (no sign but '+', no '_').
    if value is None:
        with pytest.raises(ValueError):
            _int(text)
    else:
        assert _int(text) == value


def test_a_pasid_in_octal_is_what_the_module_attaches() -> None:
    m = model("linux-6.12")
    assert run(m, f"alloc a {E0}", f"attach_pasid a {E0} 010", f"detach_pasid a {E0} 8",
               f"attach_pasid a {E0} 1_0") == [(0, False)] * 3 + [(-EINVAL, True)]


def test_replace_by_the_attached_domain_keeps_one_record() -> None:
    # attach_dev, then replace by the same domain (a no-op in the kernel): the module keeps
    # the attach_dev record only, so detach_dev and free work afterwards.
    m = model("linux-6.12")
    assert run(m, f"alloc a {E0}", f"attach_dev a {E0}", f"replace a {E0}",
               f"detach_dev a {E0}", "free a") == [(0, False)] * 5


def test_proposal_raw_detach_counts_down_and_warns_only_when_nothing_is_attached() -> None:
    # Patch 3/8: detach_device is counted; the last one returns the group to its core domain.
    m = model("proposal-2022")
    assert run(m, f"alloc d {E2}", f"attach_dev d {E2}", f"attach_dev d {E3}") == [(0, False)] * 3
    first = m.apply(f"raw_detach_dev d {E2}")
    assert (first.rc, first.warn, m.domain_of(E2)) == (0, "", "@d")
    last = m.apply(f"raw_detach_dev d {E3}")
    assert (last.rc, last.warn, m.domain_of(E2)) == (0, "", "default")
    assert m.apply(f"raw_detach_dev d {E3}").warn == "iommu_detach_device"
    # raw_detach_group takes the counted attachments with the domain: a claim works after.
    assert run(m, f"attach_dev d {E2}", f"attach_dev d {E3}", f"raw_detach_group d {E2}",
               f"claim_group {E2} o") == [(0, False)] * 4


# ------------------------------------------------------------------ DMA through edu

def dma(m: Model, line: str) -> tuple[int, bool, bool]:
    o = m.apply(line)
    return o.rc, o.guard, o.fault


@pytest.mark.parametrize(("profile", "smmu"), [("linux-6.1", False), ("linux-6.1", True),
                                               ("linux-6.12", False), ("linux-6.12", True)])
def test_dma_comes_back_only_through_the_attached_domain(profile: str, smmu: bool) -> None:
    # ih_attach.c: op_dma — pattern RAM → edu → RAM through IOVA; elsewhere the buffer stays
    # zeroed (-EIO) and the IOMMU faults where nothing maps the IOVA.
    m = model(profile, smmu=smmu)
    assert run(m, f"alloc d {E0}", f"attach_dev d {E0}", "map d 0x100000 0x1000") == \
        [(0, False)] * 3
    assert dma(m, f"dma {E0} d 0x100000 0x100") == (0, False, False)
    assert dma(m, f"dma_raw {E0} 0x900000 to_ram") == (0, False, True)
    assert dma(m, f"dma {E0} d 0x100800 0x900") == (-ENOENT, True, False)  # past the mapping
    assert dma(m, f"dma {E0} d 0x100000 4096") == (-EINVAL, True, False)  # EDU_DMA_MAX
    assert run(m, f"detach_dev d {E0}") == [(0, False)]
    assert dma(m, f"dma {E0} d 0x100000 0x100") == (-EIO, False, True)  # the default domain
    assert run(m, f"claim_group {E0} o") == [(0, False)]
    # The blocked domain of 6.12 is an abort STE on SMMUv3: no event is recorded.
    silent = smmu and profile == "linux-6.12"
    assert dma(m, f"dma {E0} d 0x100000 0x100") == (-EIO, False, not silent)


def test_dma_of_a_device_without_a_group_goes_through_the_bridge_alias() -> None:
    # SMMUv3: the second device behind the bridge has no group but the bridge alias's stream.
    groups = {1: [BR, E2], 2: [E0]}
    drivers = {E0: OWNED, E2: OWNED, E3: OWNED, BR: DMA_API}
    m = Model(get_profile("linux-6.12"), True, groups, drivers, dma_alias={E2: BR, E3: BR})
    assert run(m, f"alloc d {E2}", f"attach_group d {E2}", "map d 0x100000 0x1000") == \
        [(0, False)] * 3
    assert dma(m, f"dma {E3} d 0x100000 0x100") == (0, False, False)
    assert dma(m, f"dma {BR} d 0x100000 0x100") == (0, False, False)


def test_dma_through_an_identity_domain_is_refused_by_the_module() -> None:
    m = model("linux-6.12", drivers={E0: NO_DRIVER})
    assert run(m, f"set_type {E0} identity", f"alloc d {E1}", f"attach_dev d {E1}",
               "map d 0x100000 0x1000") == [(0, False)] * 4
    m.state.drivers[E0] = OWNED
    assert dma(m, f"dma {E0} d 0x100000 0x100") == (-EPERM, True, False)
    assert dma(m, f"dma_raw {E0} 0x100000 to_ram") == (-EPERM, True, False)
    assert dma(m, f"dma_raw {E1} 0x100000 sideways") == (-EINVAL, True, False)
    assert dma(m, f"dma {E2} e 0x100000 0x100") == (-ENOENT, True, False)
    m.state.drivers[E3] = NO_DRIVER
    assert dma(m, f"dma {E3} d 0x100000 0x100") == (-ENODEV, True, False)


# ------------------------------------------------------------------ linux-7.2 (Debian 7.2.13)

# (steps, expected (rc, guard) per step, source in Debian's 7.2.13: file:function:line)
CASES_72 = [
    ([f"alloc a {E0}", f"alloc b {E0}", f"attach_group a {E0}", f"replace b {E0}",
      f"detach_group a {E0}", f"detach_group b {E0}"],
     [(0, False), (0, False), (0, False), (-EOPNOTSUPP, True), (0, False), (-ENOENT, True)],
     "iommu.c: no iommu_group_replace_domain (nor its IOMMUFD_INTERNAL export); ih_attach.c: "
     "op_replace without IH_HAVE_REPLACE guards; the group keeps a"),
    ([f"alloc a {E1}", f"claim_group {E1} o", f"replace a {E1}", f"release_group {E1}"],
     [(0, False), (0, False), (-EOPNOTSUPP, True), (0, False)],
     "replace of an owned group: guarded as well, the claim untouched"),
    ([f"alloc a {E2}", f"replace a {E2}", f"attach_group a {E2}", f"detach_group a {E2}"],
     [(0, False), (-EOPNOTSUPP, True), (0, False), (0, False)],
     "replace of a multi-device group: guarded; iommu.c:iommu_attach_group:2384 still works"),
    ([f"replace a {E0}", f"alloc a {E0}", f"replace a {NG}"],
     [(-ENOENT, True), (0, False), (-ENODEV, True)],
     "ih_attach.c: op_domain_target checks the handle and the group before the export"),
    ([f"alloc a {NG}"], [(-ENODEV, False)],
     "iommu.c:__iommu_paging_domain_alloc_flags:2080, ERR_PTR(-ENODEV) unless dev_has_iommu"),
    ([f"alloc a {E0}", f"attach_dev a {E0}", f"attach_dev a {E0}", f"detach_dev a {E0}"],
     [(0, False), (0, False), (-EBUSY, False), (0, False)],
     "iommu.c:__iommu_attach_group:2355, -EBUSY off the default/blocking domain"),
    ([f"alloc a {E2}", f"attach_dev a {E2}"], [(0, False), (-EINVAL, False)],
     "iommu.c:iommu_attach_device:2191, -EINVAL unless the group has one device"),
    ([f"alloc a {E1}", f"attach_dev a {E1}", f"claim_group {E1} o"],
     [(0, False), (0, False), (-EBUSY, False)],
     "iommu.c:__iommu_take_dma_ownership:3394, -EBUSY off the default domain"),
    ([f"claim_group {E1} o", f"claim_group {E1} o"], [(0, False), (-EPERM, False)],
     "iommu.c:iommu_group_claim_dma_owner:3423, -EPERM while owner_cnt"),
    ([f"claim_dev {E1} o", f"claim_dev {E1} o", f"claim_dev {E1} p", f"release_dev {E1}",
      f"release_dev {E1}"],
     [(0, False), (0, False), (-EPERM, False), (0, False), (0, False)],
     "iommu.c:iommu_device_claim_dma_owner:3453 counts the same owner, -EPERM for another"),
    ([f"alloc a {E0}", f"attach_pasid a {E0} 1", f"attach_pasid a {E0} 1",
      f"attach_pasid a {E0} 0", f"attach_pasid a {NG} 1", f"claim_group {E0} o"],
     [(0, False), (0, False), (-EBUSY, False), (-EINVAL, False), (-ENODEV, False),
      (-EBUSY, False)],
     "iommu.c:iommu_attach_device_pasid:3624 (xa_insert, IOMMU_NO_PASID, no group) and "
     "__iommu_take_dma_ownership:3394 (pasid_array)"),
    ([f"set_type {E0} identity", f"set_type {E2} DMA-FQ", f"claim_group {E1} o",
      f"set_type {E1} identity"],
     [(0, False), (0, False), (0, False), (-EPERM, False)],
     "iommu.c:iommu_group_store_type:3253, -EPERM while owner_cnt, any group size"),
]


@pytest.mark.parametrize(("steps", "expected", "source"), CASES_72, ids=[c[2] for c in CASES_72])
def test_rules_72(steps: list[str], expected: list[tuple[int, bool]], source: str) -> None:
    assert run(model("linux-7.2"), *steps) == expected, source


_CASES_612 = [(c[1], c[2], c[3]) for c in CASES if c[0] == "linux-6.12"]


@pytest.mark.parametrize(("steps", "expected", "source"), _CASES_612,
                         ids=[c[2] for c in _CASES_612])
def test_72_keeps_every_612_rule_but_replace(steps: list[str], expected: list[tuple[int, bool]],
                                             source: str) -> None:
    # Everything the module reaches through edu is 6.12's code in 7.2.13 (iommu.c:
    # iommu_attach_device:2191, __iommu_attach_group:2355, the ownership calls 3316-3534,
    # iommu_group_store_type:3253, iommu_attach_device_pasid:3624), except replace.
    got = run(model("linux-7.2"), *steps)
    if any(line.startswith("replace ") for line in steps):
        replaced = [i for i, line in enumerate(steps) if line.startswith("replace ")]
        assert all(got[i] in ((-EOPNOTSUPP, True), (-ENOENT, True), (-ENODEV, True))
                   for i in replaced), source
    else:
        assert got == expected, source


def test_72_keeps_the_612_rules_with_other_drivers() -> None:
    for profile, drivers, steps, expected, source in DRIVER_CASES:
        if profile == "linux-6.12":
            assert run(model("linux-7.2", drivers=drivers), *steps) == expected, source


def test_72_warns_where_612_does() -> None:
    m = model("linux-7.2")
    # iommu.c:__iommu_release_dma_ownership:3482 and iommu_detach_device:2247.
    assert m.apply(f"raw_release_group {E1}") == Outcome(0, warn="__iommu_release_dma_ownership")
    m.apply(f"alloc a {E0}")
    assert m.apply(f"raw_detach_dev a {E0}") == Outcome(0, warn="iommu_detach_device")


def test_72_smmu_maps_before_the_first_attach_and_blocks_silently() -> None:
    # arm-smmu-v3.c:arm_smmu_domain_alloc_paging_flags:3858 finalises at allocation; the
    # blocked domain is still an abort STE (arm_smmu_attach_dev_blocked:3833).
    m = model("linux-7.2", smmu=True)
    assert run(m, f"alloc d {E0}", "map d 0x100000 0x1000", f"claim_group {E0} o") == \
        [(0, False)] * 3
    assert (m.domain_of(E0), dma(m, f"dma {E0} d 0x100000 0x100")) == \
        ("blocked", (-EIO, False, False))


# ------------------------------------------------------------------ choosing a profile

EXPORTS_72 = ("iommu_device_claim_dma_owner", "iommu_attach_device_pasid",
              "iommu_paging_domain_alloc_flags")


@pytest.mark.parametrize(("release", "exports", "name"), [
    ("6.1.0-56-amd64", (), "linux-6.1"),
    ("6.1.0-56-arm64", (), "linux-6.1"),
    ("6.12.118+deb12-arm64", EXPORTS_612, "linux-6.12"),
    ("6.12.117+deb13-amd64", EXPORTS_612, "linux-6.12"),
    ("7.2.13+deb14-amd64", EXPORTS_72, "linux-7.2"),
    ("7.2.12+bpo-arm64", EXPORTS_72, "linux-7.2"),
    ("7.3.4+bpo-amd64", EXPORTS_72, "linux-7.2"),
    ("7.3-amd64", EXPORTS_72, "linux-7.2"),  # experimental's 7.3~rc7: no patch level
    ("7.3.0-rc7", EXPORTS_72, "linux-7.2"),  # a source build
])
def test_a_release_whose_series_has_a_profile_gets_it(release: str, exports: tuple[str, ...],
                                                      name: str) -> None:
    choice = choose_profile(release, exports)
    assert (choice.profile.name, choice.assumed, choice.note) == (name, False, "")
    assert profile_for(release, exports).name == name


@pytest.mark.parametrize(("release", "exports", "name", "note"), [
    ("7.4.0-rc1", EXPORTS_72, "linux-7.2", "no profile for 7.4; assuming linux-7.2"),
    ("7.4-arm64", EXPORTS_72, "linux-7.2", "no profile for 7.4; assuming linux-7.2"),
    ("8.0", EXPORTS_72, "linux-7.2", "no profile for 8.0; assuming linux-7.2"),
    ("7.10.2+deb15-amd64", EXPORTS_72, "linux-7.2", "no profile for 7.10; assuming linux-7.2"),
    ("6.13.0", EXPORTS_612, "linux-6.12",
     "no profile for 6.13; assuming linux-6.12 (the nearest older profile)"),
    ("7.0.0-rc3", (*EXPORTS_612, "iommu_paging_domain_alloc_flags"), "linux-6.12",
     "no profile for 7.0; assuming linux-6.12 (the nearest older profile); its exports differ "
     "from what linux-6.12 expects: iommu_paging_domain_alloc_flags present"),
    ("6.6.0-1-amd64", ("iommu_device_claim_dma_owner", "iommu_group_replace_domain"),
     "linux-6.1",
     "no profile for 6.6; assuming linux-6.1 (the nearest older profile); its exports differ "
     "from what linux-6.1 expects: iommu_device_claim_dma_owner present, "
     "iommu_group_replace_domain present"),
    ("8.1", ("iommu_device_claim_dma_owner",), "linux-7.2",
     "no profile for 8.1; assuming linux-7.2; its exports differ from what linux-7.2 expects: "
     "iommu_attach_device_pasid missing, iommu_paging_domain_alloc_flags missing"),
])
def test_a_release_without_a_profile_is_assumed_with_a_note(release: str,
                                                             exports: tuple[str, ...],
                                                             name: str, note: str) -> None:
    choice = choose_profile(release, exports)
    assert (choice.profile.name, choice.assumed, choice.note) == (name, True, note)
    assert profile_for(release, exports).name == name
    assert dataclasses.is_dataclass(choice)
    with pytest.raises(dataclasses.FrozenInstanceError):
        choice.assumed = False  # type: ignore[misc]


@pytest.mark.parametrize("release", ["5.10.0-30-amd64", "6.0.12", "4.19.0-27-arm64"])
def test_a_release_older_than_every_profile_is_refused(release: str) -> None:
    with pytest.raises(ConfigError, match="no model profile for kernel") as info:
        choose_profile(release, ())
    assert f"{release}: older than linux-6.1, the oldest profile" in str(info.value)
    assert "--profile" in str(info.value)


@pytest.mark.parametrize("release", ["", "vmlinuz", "linux-7", "7", "v7.2"])
def test_a_release_without_a_version_is_refused(release: str) -> None:
    with pytest.raises(ConfigError, match="cannot read a kernel version") as info:
        choose_profile(release, EXPORTS_72)
    assert "--profile" in str(info.value)


@pytest.mark.parametrize(("release", "exports", "wrong"), [
    ("7.2.13+deb14-amd64", EXPORTS_612,
     "iommu_group_replace_domain present, iommu_paging_domain_alloc_flags missing"),
    ("7.3-amd64", (*EXPORTS_72, "iommu_group_replace_domain"),
     "iommu_group_replace_domain present"),
    ("6.12.118+deb12-amd64", EXPORTS_72,
     "iommu_group_replace_domain missing, iommu_paging_domain_alloc_flags present"),
    ("7.2.13+deb14-amd64", (), "iommu_device_claim_dma_owner missing"),
])
def test_an_exact_series_whose_exports_do_not_fit_is_refused(release: str,
                                                             exports: tuple[str, ...],
                                                             wrong: str) -> None:
    with pytest.raises(ConfigError, match="does not export what profile") as info:
        choose_profile(release, exports)
    assert wrong in str(info.value)


# The attach, claim, replace, PASID and allocation exports of Debian's 7.2.13+deb14-amd64
# (its linux-headers package's Module.symvers, every such iommu_* line).
SYMVERS_72 = "".join(
    f"0x00000000\t{name}\tvmlinux\tEXPORT_SYMBOL_GPL\t{ns}\n" for name, ns in (
        ("iommu_alloc_global_pasid", ""), ("iommu_attach_device", ""),
        ("iommu_attach_device_pasid", ""), ("iommu_attach_group", ""),
        ("iommu_attach_group_handle", "IOMMUFD_INTERNAL"),
        ("iommu_attach_handle_get", "IOMMUFD_INTERNAL"), ("iommu_detach_device", ""),
        ("iommu_detach_device_pasid", ""), ("iommu_detach_group", ""),
        ("iommu_detach_group_handle", "IOMMUFD_INTERNAL"),
        ("iommu_device_claim_dma_owner", ""), ("iommu_free_global_pasid", ""),
        ("iommu_group_claim_dma_owner", ""), ("iommu_group_dma_owner_claimed", ""),
        ("iommu_paging_domain_alloc_flags", ""),
        ("iommu_replace_device_pasid", "IOMMUFD_INTERNAL"),
        ("iommu_replace_group_handle", "IOMMUFD_INTERNAL"), ("iommu_sva_get_pasid", "")))


def test_debians_72_exports_choose_linux_72_exactly() -> None:
    exported = parse_symvers(SYMVERS_72)
    assert "iommu_group_replace_domain" not in exported
    for release in ("7.2.13+deb14-amd64", "7.3-amd64"):
        assert choose_profile(release, exported).profile.name == "linux-7.2"
    with pytest.raises(ConfigError, match="iommu_group_replace_domain missing"):
        choose_profile("6.12.118+deb12-amd64", exported)
