"""The reference model against the rules, table-driven; each case cites its source.

Groups as the default topology forms them (singletons 00:03.0 and 00:04.0, the bridge group
00:02.0 + 01:01.0 + 01:02.0), devices bound to a driver_managed_dma driver unless a case says
otherwise."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError
from harness.model import DMA_API, OWNED, Model, get_profile, profile_for
from harness.model.core import EBUSY, EINVAL, ENODEV, ENOENT, EOPNOTSUPP, EPERM

E0, E1, BR, E2, E3 = "0000:00:03.0", "0000:00:04.0", "0000:00:02.0", "0000:01:01.0", \
    "0000:01:02.0"
GROUPS = {2: [E0], 3: [E1], 1: [BR, E2, E3]}


def model(profile: str = "linux-6.1", smmu: bool = False, drivers: dict[str, str] | None = None
          ) -> Model:
    d = {E0: OWNED, E1: OWNED, E2: OWNED, E3: OWNED, BR: "none"}
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
]


@pytest.mark.parametrize(("profile", "steps", "expected", "source"), CASES,
                         ids=[c[3] for c in CASES])
def test_rules(profile: str, steps: list[str], expected: list[tuple[int, bool]],
               source: str) -> None:
    assert run(model(profile), *steps) == expected, source


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


def test_profile_from_release_and_exports() -> None:
    assert profile_for("6.1.0-56-amd64", []).name == "linux-6.1"
    assert profile_for("6.12.117+deb12-arm64", ["iommu_device_claim_dma_owner"]).name == \
        "linux-6.12"
    with pytest.raises(ConfigError, match="does not export"):
        profile_for("6.12.117+deb12-amd64", [])
    with pytest.raises(ConfigError, match="no model profile"):
        profile_for("5.10.0-1-amd64", [])


def test_garbage_operations_are_guarded_not_raised() -> None:
    m = model()
    for line in ["bogus", "alloc", "map d x y", f"alloc D! {E0}", "unmap d notanumber"]:
        assert m.apply(line).guard
