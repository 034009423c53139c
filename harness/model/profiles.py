"""Profiles: the kernel versions and the 2022 proposals, as data and small rule switches.

harness/model/rules.py cites every field of every profile (file:function:line of the Debian
sources); this module holds the values and chooses a profile for a running kernel.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

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
    has_vfio_cdev=True, release_warn="__iommu_release_dma_ownership",
    alloc_symbol="iommu_paging_domain_alloc",
    pasid_checks="6.12", group_handle_rule="6.12",
    description="Debian 6.12.117: static BLOCKED domain; iommu_device_claim_dma_owner; "
                "iommu_paging_domain_alloc(dev); sysfs type writes under owner_cnt; "
                "iommu_group_replace_domain; PASID attach")
# 6.12 with what Debian's 7.2.13 changed (read against 6.12.118; 7.3.4's iommu.c and iommu.h
# are 7.2.13's but for a comment): the attach, detach, ownership, sysfs type and PASID rules
# the module reaches are 6.12's; iommu_group_replace_domain is gone, so the module guards.
LINUX_72 = replace(
    LINUX_612, name="linux-7.2", has_replace=False,
    alloc_symbol="iommu_paging_domain_alloc_flags", pasid_checks="7.2",
    group_handle_rule="7.2", reset_parking=True, smmu_groups_need_driver=False,
    description="Debian 7.2.13 (and 7.3): 6.12's rules; iommu_group_replace_domain removed "
                "(replace guarded); iommu_paging_domain_alloc_flags; PCI reset of an ATS "
                "device parks it (unreachable with edu); SMMUv3 groups at device add")
PROPOSAL_2022 = Profile(
    name="proposal-2022", blocking_type=1, has_device_claim=False, alloc_needs_iommu=False,
    smmu_finalise_at_attach=True, attach_device_rule="proposal-2022",
    description="6.1 with iommu_attach/detach_device replaced by 'Scrap "
                "iommu_attach/detach_group() interfaces' v1 3/8 (2022-01-06)")
PROPOSAL_2022_ALT = Profile(
    name="proposal-2022-alt", blocking_type=1, has_device_claim=False, alloc_needs_iommu=False,
    smmu_finalise_at_attach=True, attach_device_rule="proposal-2022-alt",
    description="6.1 with the attach rule Jason Gunthorpe proposed in review of 3/8")

PROFILES = {p.name: p for p in (LINUX_61, LINUX_612, LINUX_72, PROPOSAL_2022,
                                PROPOSAL_2022_ALT)}

# The kernel series each version profile stands for, oldest first. The proposals stand for
# none: only --profile chooses them.
SERIES: tuple[tuple[tuple[int, int], Profile], ...] = (
    ((6, 1), LINUX_61), ((6, 12), LINUX_612), ((7, 2), LINUX_72), ((7, 3), LINUX_72))


@dataclass(frozen=True)
class ProfileChoice:
    """The profile for a running kernel. ``assumed``: no profile is meant for its series, so
    a neighbouring one stands in; ``note`` says which and how its exports differ."""

    profile: Profile
    assumed: bool = False
    note: str = ""


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown profile {name!r}",
                          f"choose one of: {', '.join(PROFILES)}") from None


def series_of(profile: Profile) -> tuple[str, ...]:
    """The kernel series ("7.2", "7.3") a profile is chosen for; () for the proposals."""
    return tuple(f"{a}.{b}" for (a, b), p in SERIES if p is profile)


def release_series(release: str) -> tuple[int, int]:
    """Major and minor of a kernel release: "6.12.118+deb12-arm64" → (6, 12), "7.3-amd64"
    (an experimental rc's uname -r) → (7, 3), "7.3.0-rc7" → (7, 3), "8.0" → (8, 0)."""
    m = re.match(r"(\d+)\.(\d+)(?![\d])", release.strip())
    if m is None:
        raise ConfigError(f"cannot read a kernel version from release {release!r}",
                          f"pass --profile to choose one of: {', '.join(PROFILES)}")
    return int(m.group(1)), int(m.group(2))


def choose_profile(release: str, exported: Iterable[str]) -> ProfileChoice:
    """The profile of a running kernel from its release and the symbols it exports (its
    Module.symvers), so that a backport or a removal is seen.

    - A release whose series has a profile gets it (6.1 → linux-6.1, 6.12 → linux-6.12, 7.2
      and 7.3 → linux-7.2). If the kernel does not export what that profile expects, it is
      refused (ConfigError naming the symbol): the profile would predict the wrong thing.
    - A release newer than every profile (7.4.0-rc1, 8.0) gets the newest profile, and one
      between two profiles (6.6) the nearest older one: new kernels mostly keep the rules of
      the last one read, and an older profile never predicts an API the kernel may lack.
      Such a choice is ``assumed``: the note says so ("no profile for 7.4; assuming
      linux-7.2") and lists the exports that do not fit, instead of refusing.
    - A release older than every profile (5.10) is refused: pass --profile to force one.
    """
    symbols = set(exported)
    version = release_series(release)
    exact = dict(SERIES).get(version)
    if exact is not None:
        mismatch = _export_mismatch(exact, symbols)
        if mismatch:
            raise ConfigError(f"kernel {release} does not export what profile {exact.name} "
                              f"expects ({', '.join(mismatch)})", "pass --profile to force one")
        return ProfileChoice(exact)
    older = [p for v, p in SERIES if v < version]
    if not older:
        oldest = SERIES[0][1]
        raise ConfigError(f"no model profile for kernel {release}: older than {oldest.name}, "
                          "the oldest profile",
                          f"pass --profile to force one of: {', '.join(PROFILES)}")
    base = older[-1]
    wanted = f"{version[0]}.{version[1]}"
    note = f"no profile for {wanted}; assuming {base.name}"
    if len(older) < len(SERIES):
        note += " (the nearest older profile)"
    mismatch = _export_mismatch(base, symbols)
    if mismatch:
        note += f"; its exports differ from what {base.name} expects: {', '.join(mismatch)}"
    return ProfileChoice(base, assumed=True, note=note)


def profile_for(release: str, exported: Iterable[str]) -> Profile:
    """choose_profile's profile alone (its note, for an assumed one, is dropped)."""
    return choose_profile(release, exported).profile


def _export_mismatch(profile: Profile, symbols: set[str]) -> list[str]:
    """Each feature symbol whose presence in ``symbols`` differs from what the profile
    expects, as "<symbol> missing" or "<symbol> present"."""
    out = []
    for symbol, expects in _FEATURE_SYMBOLS:
        if expects(profile) != (symbol in symbols):
            out.append(f"{symbol} {'missing' if expects(profile) else 'present'}")
    return out


# An exported symbol that shows a feature, and whether a profile expects it to be there.
_FEATURE_SYMBOLS: tuple[tuple[str, Callable[[Profile], bool]], ...] = (
    ("iommu_device_claim_dma_owner", lambda p: p.has_device_claim),
    ("iommu_group_replace_domain", lambda p: p.has_replace),
    ("iommu_attach_device_pasid", lambda p: p.has_pasid),
    ("iommu_paging_domain_alloc_flags",
     lambda p: p.alloc_symbol == "iommu_paging_domain_alloc_flags"))
