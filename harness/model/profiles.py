"""Profiles: the kernel versions and the 2022 proposals, as data and small rule switches."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import ConfigError
from .core import Profile

LINUX_61 = Profile(
    name="linux-6.1", blocking_type=1, has_device_claim=False, alloc_needs_iommu=False,
    smmu_finalise_at_attach=True,
    description="Debian 6.1.192: blocking domain is an empty UNMANAGED domain; no "
                "iommu_device_claim_dma_owner; iommu_domain_alloc(bus)")
LINUX_612 = Profile(
    name="linux-6.12", blocking_type=0, has_device_claim=True, alloc_needs_iommu=True,
    smmu_finalise_at_attach=False, type_rule="6.12", has_replace=True, has_pasid=True,
    release_warn="__iommu_release_dma_ownership",
    description="Debian 6.12.117: static BLOCKED domain; iommu_device_claim_dma_owner; "
                "iommu_paging_domain_alloc(dev); sysfs type writes under owner_cnt; "
                "iommu_group_replace_domain; PASID attach")
PROPOSAL_2022 = Profile(
    name="proposal-2022", blocking_type=1, has_device_claim=False, alloc_needs_iommu=False,
    smmu_finalise_at_attach=True, attach_device_rule="proposal-2022",
    description="6.1 with iommu_attach/detach_device replaced by 'Scrap "
                "iommu_attach/detach_group() interfaces' v1 3/8 (2022-01-06)")
PROPOSAL_2022_ALT = Profile(
    name="proposal-2022-alt", blocking_type=1, has_device_claim=False, alloc_needs_iommu=False,
    smmu_finalise_at_attach=True, attach_device_rule="proposal-2022-alt",
    description="6.1 with the attach rule Jason Gunthorpe proposed in review of 3/8")

PROFILES = {p.name: p for p in (LINUX_61, LINUX_612, PROPOSAL_2022, PROPOSAL_2022_ALT)}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown profile {name!r}",
                          f"choose one of: {', '.join(PROFILES)}") from None


def profile_for(release: str, exported: Iterable[str]) -> Profile:
    """The profile of a running kernel: its release, checked against what it exports (from
    Module.symvers), so a backport that adds an API is seen."""
    symbols = set(exported)
    series = ".".join(release.split(".")[:2])
    if series == "6.1":
        base = LINUX_61
    elif series == "6.12":
        base = LINUX_612
    else:
        raise ConfigError(f"no model profile for kernel {release}",
                          "pass --profile linux-6.1 or linux-6.12 to force one")
    for flag, symbol in _FEATURE_SYMBOLS:
        expected = getattr(base, flag)
        if expected != (symbol in symbols):
            raise ConfigError(f"kernel {release} does not export what profile {base.name} "
                              f"expects ({symbol} {'missing' if expected else 'present'})",
                              "pass --profile to force one")
    return base


# A profile's feature flags and the exported symbol that shows the feature.
_FEATURE_SYMBOLS = (("has_device_claim", "iommu_device_claim_dma_owner"),
                    ("has_replace", "iommu_group_replace_domain"),
                    ("has_pasid", "iommu_attach_device_pasid"))
