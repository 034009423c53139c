"""Each profile's rules as cited text, and the rule-level difference of two profiles (pure).

A rule is a field of :class:`~harness.model.core.Profile` (all but its name and description):
its value as text and where the kernel source (or the proposal) says so, as
``file:function:line (Debian version)``. The rule list is derived from the dataclass's fields,
so a field added to Profile without a description here, or a profile without a citation for
it, shows up as ``(no citation)`` (the unit tests refuse both).

A profile's citation of a field comes from its own table; a profile with a base (the
proposals are 6.1 with another attach rule) takes its base's citation for a field whose value
it shares. Line numbers are those of Debian's linux-source packages: 6.1.192-3,
6.12.118-1~deb12u1 (the model's rules were read in 6.12.117; no difference in these paths) and
7.2.13-1 (7.3.4's iommu.c and iommu.h are 7.2.13's but for a comment).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from .core import Profile
from .profiles import PROFILES, series_of

# Profile fields that are not rules.
META_FIELDS = ("name", "description")
MISSING = "(no citation)"

# What each rule is (one line); every rule field of Profile must have an entry.
RULES: Mapping[str, str] = {
    "blocking_type": "the domain an owned group sits on (group->blocking_domain)",
    "has_device_claim": "iommu_device_claim_dma_owner/release exported: claim_dev, release_dev "
                        "reach the kernel (else the module guards, -EOPNOTSUPP)",
    "alloc_needs_iommu": "the module's alloc is -ENODEV for a device without an IOMMU group",
    "smmu_finalise_at_attach": "SMMUv3 builds a domain's page table only at its first attach "
                               "(map before it: -ENODEV)",
    "attach_device_rule": "iommu_attach_device/iommu_detach_device: which groups, counted how",
    "type_rule": "how a write to a group's sysfs type is checked",
    "has_replace": "iommu_group_replace_domain exported: replace reaches the kernel (else the "
                   "module guards, -EOPNOTSUPP)",
    "has_pasid": "iommu_attach_device_pasid with an attach handle: attach_pasid/detach_pasid "
                 "reach the kernel (else the module guards, -EOPNOTSUPP)",
    "has_vfio_cdev": "VFIO's device character device binds to iommufd "
                     "(VFIO_DEVICE_BIND_IOMMUFD): the iommufd_* steps reach the kernel (else "
                     "there is no /dev/iommu, -ENOENT)",
    "release_warn": "the function that WARNs on a DMA-owner release nobody holds",
    "alloc_symbol": "the exported call behind the module's alloc (and the symbol check)",
    "pasid_checks": "iommu_attach_device_pasid's check order (fact: the same outcomes for edu)",
    "group_handle_rule": "iommu_attach/replace_group_handle with a NULL handle (fact: the module "
                         "does not call them)",
    "reset_parking": "a PCI reset of an ATS device parks it on the blocking domain, attaches "
                     "and claims -EBUSY meanwhile (fact: edu has no ATS)",
    "smmu_groups_need_driver": "SMMUv3: a PCI device gets its group only when a driver probes "
                               "it (else at device add); for the topology prediction",
}

# Where each profile's values come from.
SOURCES: Mapping[str, str] = {
    "linux-6.1": "Debian 6.1.192", "linux-6.12": "Debian 6.12.118",
    "linux-7.2": "Debian 7.2.13",
    "proposal-2022": "Lu Baolu, 'Scrap iommu_attach/detach_group() interfaces' v1 (2022-01-06)",
    "proposal-2022-alt": "Jason Gunthorpe, review of that series' 3/8 (2022-01-06)",
}
# A profile that takes its base's citation where its value is the base's.
BASES: Mapping[str, str] = {"proposal-2022": "linux-6.1", "proposal-2022-alt": "linux-6.1"}

_I61, _I612, _I72 = ("drivers/iommu/iommu.c:{} (6.1.192)", "drivers/iommu/iommu.c:{} (6.12.118)",
                     "drivers/iommu/iommu.c:{} (7.2.13)")
_S61, _S612, _S72 = ("drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c:{} (6.1.192)",
                     "drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c:{} (6.12.118)",
                     "drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c:{} (7.2.13)")

CITATIONS: Mapping[str, Mapping[str, str]] = {
    "linux-6.1": {
        "blocking_type": _I61.format("__iommu_group_alloc_blocking_domain:3174") +
        ": IOMMU_DOMAIN_BLOCKED, else an empty UNMANAGED domain; intel/iommu.c:"
        "intel_iommu_domain_alloc:4234 and arm-smmu-v3.c:arm_smmu_domain_alloc:2055 have no "
        "BLOCKED type",
        "has_device_claim": "include/linux/iommu.h (6.1.192): no iommu_device_claim_dma_owner",
        "alloc_needs_iommu": _I61.format("iommu_domain_alloc:1934") +
        ": needs only bus->iommu_ops, not the device's group",
        "smmu_finalise_at_attach": _S61.format("arm_smmu_attach_dev:2443") +
        " calls arm_smmu_domain_finalise:2211; arm_smmu_map_pages:2519 is -ENODEV before",
        "attach_device_rule": _I61.format("iommu_attach_device:1979") +
        ": -EINVAL unless the group has one device; iommu_detach_device:2025 WARNs otherwise",
        "type_rule": _I61.format("iommu_group_store_type:3013") + ": one device, no driver "
        "(-EINVAL, -EBUSY); iommu_change_dev_def_domain:2882: -EBUSY off the default domain",
        "has_replace": "drivers/iommu/iommu.c (6.1.192): no iommu_group_replace_domain",
        "has_pasid": "include/linux/iommu.h (6.1.192): no iommu_attach_device_pasid",
        "has_vfio_cdev": "drivers/vfio/vfio_main.c:vfio_device_fops_unl_ioctl:1511 (6.1.192): "
        "no VFIO_DEVICE_BIND_IOMMUFD; no drivers/iommu/iommufd (it arrived in 6.2, VFIO's "
        "drivers/vfio/device_cdev.c in 6.6)",
        "release_warn": _I61.format("iommu_group_release_dma_owner:3244") +
        ": WARN_ON(!owner_cnt || !owner)",
        "alloc_symbol": _I61.format("iommu_domain_alloc:1934") + ", EXPORT_SYMBOL_GPL:1938",
        "pasid_checks": "drivers/iommu/iommu.c (6.1.192): no PASID attach API",
        "group_handle_rule": "drivers/iommu/iommu.c (6.1.192): no iommu_attach_group_handle",
        "reset_parking": "drivers/iommu/iommu.c (6.1.192): no pci_dev_reset_iommu_prepare",
        "smmu_groups_need_driver": _S61.format("arm_smmu_probe_device:2685") +
        ": -ENODEV without a fwspec, which drivers/iommu/of_iommu.c:of_iommu_configure makes "
        "from the bus's dma_configure in drivers/base/dd.c:really_probe:583",
    },
    "linux-6.12": {
        "blocking_type": _I612.format("__iommu_group_alloc_blocking_domain:3163") +
        " → __iommu_domain_alloc:1940 returns ops->blocked_domain (intel/iommu.c:"
        "intel_iommu_ops.blocked_domain:4675, arm-smmu-v3.c:arm_smmu_ops.blocked_domain:3529)",
        "has_device_claim": _I612.format("iommu_device_claim_dma_owner:3244"),
        "alloc_needs_iommu": _I612.format("iommu_paging_domain_alloc:2043") +
        ": ERR_PTR(-ENODEV) unless dev_has_iommu",
        "smmu_finalise_at_attach": _S612.format("arm_smmu_domain_alloc_paging:2339") +
        " finalises the domain for the device at allocation",
        "attach_device_rule": _I612.format("iommu_attach_device:2106") +
        ": -EINVAL unless the group has one device; iommu_detach_device:2140 WARNs otherwise",
        "type_rule": _I612.format("iommu_group_store_type:3047") + ": DMA → DMA-FQ in place; "
        "else -EPERM while owner_cnt; iommu_setup_default_domain:2950 replaces any domain",
        "has_replace": _I612.format("iommu_group_replace_domain:2231") +
        ", EXPORT_SYMBOL_NS_GPL(IOMMUFD_INTERNAL)",
        "has_vfio_cdev": "drivers/vfio/device_cdev.c:vfio_df_ioctl_bind_iommufd (6.12.118), "
        "under CONFIG_VFIO_DEVICE_CDEV (off in Debian's packages)",
        "has_pasid": _I612.format("iommu_attach_device_pasid:3391") +
        " (struct iommu_attach_handle *handle)",
        "release_warn": _I612.format("__iommu_release_dma_ownership:3273") +
        ": WARN_ON(!owner_cnt || !owner || PASIDs attached)",
        "alloc_symbol": _I612.format("iommu_paging_domain_alloc:2043") + ", exported",
        "pasid_checks": _I612.format("iommu_attach_device_pasid:3391") + ": -EOPNOTSUPP without"
        " the domain's set_dev_pasid, then -ENODEV without a group, -EINVAL (ops != owner, "
        "PASID 0, ≥ max_pasids), -EBUSY (xa_insert)",
        "group_handle_rule": _I612.format("iommu_attach_group_handle:3532") +
        " and iommu_replace_group_handle:3588 take a NULL handle (stored as NULL)",
        "reset_parking": "drivers/iommu/iommu.c (6.12.118): no pci_dev_reset_iommu_prepare",
        "smmu_groups_need_driver": _I612.format("__iommu_probe_device:513") +
        ": -ENODEV while iommu_fwspec_ops finds no ops; drivers/iommu/of_iommu.c:"
        "of_iommu_configure:118 makes the fwspec from drivers/base/dd.c:really_probe:663",
    },
    "linux-7.2": {
        "blocking_type": _I72.format("__iommu_group_alloc_blocking_domain:3369") +
        ": ops->blocked_domain first (intel/iommu.c:intel_iommu_ops.blocked_domain:3943, "
        "arm-smmu-v3.c:arm_smmu_ops.blocked_domain:4308), else an empty paging domain",
        "has_device_claim": _I72.format("iommu_device_claim_dma_owner:3453") +
        " (code as 6.12; __iommu_take_dma_ownership:3394 also -EBUSY during a reset)",
        "alloc_needs_iommu": _I72.format("__iommu_paging_domain_alloc_flags:2080") +
        ": ERR_PTR(-ENODEV) unless dev_has_iommu",
        "smmu_finalise_at_attach": _S72.format("arm_smmu_domain_alloc_paging_flags:3858") +
        " calls arm_smmu_domain_finalise at allocation",
        "attach_device_rule": _I72.format("iommu_attach_device:2191") +
        " (unchanged: -ENODEV, -EINVAL unless one device, __iommu_attach_group:2355); "
        "iommu_detach_device:2247 WARNs as before",
        "type_rule": _I72.format("iommu_group_store_type:3253") +
        " (as 6.12 but the iommu_setup_dma_ops argument); iommu_setup_default_domain:3148",
        "has_replace": "drivers/iommu/iommu.c (7.2.13): iommu_group_replace_domain removed "
        "with its IOMMUFD_INTERNAL export; iommufd uses iommu_replace_group_handle:3976",
        "has_vfio_cdev": "drivers/vfio/device_cdev.c:vfio_df_ioctl_bind_iommufd:83 (7.2.13), "
        "under CONFIG_VFIO_DEVICE_CDEV (off in Debian's packages)",
        "has_pasid": _I72.format("iommu_attach_device_pasid:3624") +
        " (same prototype, include/linux/iommu.h:1217)",
        "release_warn": _I72.format("__iommu_release_dma_ownership:3482") +
        ": WARN_ON(!owner_cnt || !owner || PASIDs attached)",
        "alloc_symbol": "include/linux/iommu.h:iommu_paging_domain_alloc:935 (7.2.13), an "
        "inline wrapper of " + _I72.format("iommu_paging_domain_alloc_flags:2119") +
        ", exported",
        "pasid_checks": _I72.format("iommu_attach_device_pasid:3624") + ": -ENODEV without a "
        "group, then -EOPNOTSUPP unless the domain and ops->blocked_domain have set_dev_pasid, "
        "-EINVAL (domain_iommu_ops_compatible:2342, PASID 0), -EBUSY while recovery_cnt, "
        "-EINVAL ≥ max_pasids, -EBUSY (xa_insert)",
        "group_handle_rule": _I72.format("iommu_attach_group_handle:3904") +
        " and iommu_replace_group_handle:3976: -EINVAL for a NULL handle",
        "reset_parking": _I72.format("pci_dev_reset_iommu_prepare:4034") +
        " and pci_dev_reset_iommu_done:4146 (called by drivers/pci/pci.c:pcie_flr, pci_af_flr, "
        "pci_pm_reset, pci_reset_bus_function, cxl_reset_bus_function); "
        "__iommu_group_set_domain_internal:2479 -EBUSY while recovery_cnt. Returns at once "
        "unless pci_ats_supported: QEMU's edu has no ATS, so no step can reach it",
        "smmu_groups_need_driver": _I72.format("iommu_init_device:469") +
        " runs the bus's dma_configure itself for a device without fwspec or driver; "
        "drivers/pci/pci-driver.c:pci_dma_configure:1692 allows a NULL driver, "
        "drivers/iommu/of_iommu.c:of_iommu_configure:114 (read, not run)",
    },
    "proposal-2022": {
        "attach_device_rule": "patch 3/8 <20220106022053.2406748-4-baolu.lu@linux.intel.com>: "
        "iommu_attach_device on any group, counted in attach_cnt and owner_cnt",
    },
    "proposal-2022-alt": {
        "attach_device_rule": "<20220106172249.GJ2328285@nvidia.com>: by the driver's "
        "no_kernel_api_dma; -EBUSY where 3/8 has -EPERM",
    },
}

_VALUE_TEXT: Mapping[tuple[str, object], str] = {
    ("blocking_type", 0): "0 (the static BLOCKED domain)",
    ("blocking_type", 1): "1 (an empty UNMANAGED domain)",
}


@dataclass(frozen=True)
class Rule:
    id: str  # the Profile field
    value: str
    citation: str


@dataclass(frozen=True)
class RuleDiff:
    id: str
    description: str
    a: Rule
    b: Rule


def rule_fields() -> tuple[str, ...]:
    """The Profile fields that are rules, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(Profile) if f.name not in META_FIELDS)


def value_text(rule: str, value: object) -> str:
    label = _VALUE_TEXT.get((rule, value))
    if label is not None:
        return label
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def citation(profile: Profile, rule: str) -> str:
    """Where ``profile``'s value of ``rule`` comes from; MISSING when nowhere."""
    own = CITATIONS.get(profile.name, {}).get(rule)
    if own is not None:
        return own
    base = PROFILES.get(BASES.get(profile.name, ""))
    if base is not None and getattr(base, rule) == getattr(profile, rule):
        return f"{citation(base, rule)} (as {base.name})"
    return MISSING


def profile_rules(profile: Profile) -> list[Rule]:
    return [Rule(r, value_text(r, getattr(profile, r)), citation(profile, r))
            for r in rule_fields()]


def diff_profiles(a: Profile, b: Profile) -> list[RuleDiff]:
    """The rules whose values differ between ``a`` and ``b``, in declaration order."""
    return [RuleDiff(ra.id, RULES.get(ra.id, MISSING), ra, rb)
            for ra, rb in zip(profile_rules(a), profile_rules(b), strict=True)
            if ra.value != rb.value]


def format_diff(a: Profile, b: Profile) -> str:
    """A header, then one line per differing rule: both values, each with its citation."""
    diffs = diff_profiles(a, b)
    head = (f"{a.name} vs {b.name}: {len(diffs)} of {len(rule_fields())} rules differ"
            if diffs else f"{a.name} vs {b.name}: no rule differs")
    return "\n".join([head, *(f"{d.id}: {a.name} {d.a.value} [{d.a.citation}] | {b.name} "
                              f"{d.b.value} [{d.b.citation}]" for d in diffs)])


def format_rules(profile: Profile) -> str:
    """Every rule of one profile, a line each, with its value and citation."""
    return "\n".join([f"{profile.name} ({SOURCES.get(profile.name, '?')})",
                      *(f"{r.id}: {r.value} [{r.citation}]" for r in profile_rules(profile))])


def format_profiles() -> str:
    """The profiles the model knows, a line each: name, the kernel series it is chosen for
    ("--profile only" for the proposals) and its description."""
    width = max(len(n) for n in PROFILES)
    lines = []
    for name, p in PROFILES.items():
        series = ", ".join(series_of(p)) or "--profile only"
        lines.append(f"{name:<{width}}  {series:<14}  {p.description}")
    return "\n".join(lines)
