"""The model's state and data: what drivers/iommu/iommu.c keeps of a group (domain, owner,
owner_cnt), what ih_attach tracks (domain handles, attachments, claims, mappings), the
outcome of an operation and the profile that says which rules apply (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from errno import EBUSY, EEXIST, EINVAL, EIO, ENODEV, ENOENT, ENOSPC, EOPNOTSUPP, EPERM

# The errno values the model answers with, re-exported: Python's are the kernel's on x86_64
# and arm64 (include/uapi/asm-generic/errno-base.h, errno.h).
__all__ = [
    "BLOCKING",
    "DEFAULT",
    "DMA_API",
    "DOMAIN_TYPES",
    "EBUSY",
    "EEXIST",
    "EINVAL",
    "EIO",
    "ENODEV",
    "ENOENT",
    "ENOSPC",
    "EOPNOTSUPP",
    "EPERM",
    "NO_DRIVER",
    "OWNED",
    "TYPE_REQUESTS",
    "USER_DOMAINS",
    "VFIO_DOMAIN",
    "Group",
    "Hold",
    "IommufdState",
    "Outcome",
    "Profile",
    "State",
    "VfioState",
    "_int",
    "_valid_name",
]

DEFAULT = "default"
BLOCKING = "blocking"

# Driver kinds a device can be bound to.
NO_DRIVER, DMA_API, OWNED = "none", "dma_api", "owned"

# Default domain types as a group's sysfs `type` shows them, and what a write may ask for.
DOMAIN_TYPES = ("identity", "DMA", "DMA-FQ")
TYPE_REQUESTS = (*DOMAIN_TYPES, "auto")


@dataclass(frozen=True)
class Outcome:
    rc: int
    guard: bool = False
    warn: str = ""  # non-empty: the kernel would WARN here (the model says so; dmesg must agree)
    fault: bool = False  # the IOMMU reports a DMA fault (DMAR fault, SMMU event) here

    @staticmethod
    def ok() -> Outcome:
        return Outcome(0)

    @staticmethod
    def guarded(errno: int) -> Outcome:
        return Outcome(-errno, guard=True)


@dataclass
class Group:
    id: int
    members: list[str]
    domain: str = DEFAULT  # DEFAULT, BLOCKING, or one of our handles
    owner: str | None = None
    owner_cnt: int = 0
    dtype: str = "DMA"  # the default domain's type, as sysfs `type` shows it
    pasids: dict[int, str] = field(default_factory=dict)  # group->pasid_array: pasid → handle


@dataclass
class Hold:
    kind: str  # attach_dev, attach_group, claim_group, claim_dev, pasid
    group: int
    device: str  # the device named in the operation
    domain: str | None = None
    pasid: int = -1


# The domain VFIO's type1 backend attaches to the groups of its container (one per container:
# drivers/vfio/vfio_iommu_type1.c moves compatible groups onto one domain).
VFIO_DOMAIN = "vfio:type1"


@dataclass
class VfioState:
    """What the guest's VFIO user (guest_modules/tools/ih-vfio.c) holds, and the devices bound
    to vfio-pci (each one's group has a /dev/vfio/N)."""
    bound: set[str] = field(default_factory=set)
    container: bool = False  # /dev/vfio/vfio is open
    iommu: bool = False  # VFIO_SET_IOMMU done: the container has its type1 backend
    groups: dict[int, bool] = field(default_factory=dict)  # open group → set in the container
    devices: set[str] = field(default_factory=set)  # open device fds, by device
    unbinding: set[str] = field(default_factory=set)  # vfio-pci unbinds waiting for a close


@dataclass
class IommufdState:
    """What the guest's VFIO user holds of iommufd: /dev/iommu, its devices bound through their
    character devices (each → the IOAS or HWPT it is attached to, or None), its IOASes and
    its HWPTs (each → the IOAS under it)."""
    open: bool = False
    devices: dict[str, str | None] = field(default_factory=dict)
    ioas: set[str] = field(default_factory=set)
    hwpts: dict[str, str] = field(default_factory=dict)


# Domains user space holds (VFIO's type1 domain, iommufd's): a module reset leaves them alone.
USER_DOMAINS = ("vfio:", "iommufd:")


@dataclass
class State:
    groups: dict[int, Group]
    device_group: dict[str, int]  # devices that have a group
    drivers: dict[str, str]  # device → NO_DRIVER | DMA_API | OWNED
    domains: dict[str, bool] = field(default_factory=dict)  # handle → finalised (attached once)
    holds: list[Hold] = field(default_factory=list)
    maps: dict[tuple[str, int], int] = field(default_factory=dict)  # (handle, iova) → size
    vfio: VfioState = field(default_factory=VfioState)
    iommufd: IommufdState = field(default_factory=IommufdState)

    def group_of(self, dev: str) -> Group | None:
        gid = self.device_group.get(dev)
        return None if gid is None else self.groups[gid]


@dataclass(frozen=True)
class Profile:
    """A kernel version or a proposal: data plus the rules that differ."""

    name: str
    blocking_type: int  # 1: an empty UNMANAGED domain (6.1); 0: the static BLOCKED one (6.12+)
    has_device_claim: bool  # iommu_device_claim_dma_owner exported (6.2+)
    alloc_needs_iommu: bool  # iommu_paging_domain_alloc(dev): -ENODEV for a device without one
    smmu_finalise_at_attach: bool  # SMMUv3 builds the page table at first attach (6.1)
    attach_device_rule: str = "singleton"  # "singleton" | "proposal-2022" | "proposal-2022-alt"
    type_rule: str = "6.1"  # how a write to a group's sysfs `type` is checked: "6.1" | "6.12"
    has_replace: bool = False  # iommu_group_replace_domain exported (IOMMUFD_INTERNAL, 6.6
    #                            to 6.x; gone in 7.2)
    has_pasid: bool = False  # iommu_attach_device_pasid with an attach handle (6.11+)
    has_vfio_cdev: bool = False  # VFIO's device cdev bound to iommufd (6.6+)
    release_warn: str = "iommu_group_release_dma_owner"  # where a bad DMA-owner release WARNs
    # The exported call the module's alloc reaches: iommu_domain_alloc (6.1),
    # iommu_paging_domain_alloc (6.12), iommu_paging_domain_alloc_flags (7.2: the inline
    # iommu_paging_domain_alloc wraps it). Also what the symbol check looks for.
    alloc_symbol: str = "iommu_domain_alloc"
    # Facts of a version that the module cannot reach through edu, kept so that a profile
    # states them (harness/model/rules.py cites each); the rules above do not read them.
    pasid_checks: str = "-"  # iommu_attach_device_pasid's check order: "-" | "6.12" | "7.2"
    group_handle_rule: str = "-"  # iommu_{attach,replace}_group_handle, NULL handle: "-" |
    #                               "6.12" (accepted) | "7.2" (-EINVAL)
    reset_parking: bool = False  # a PCI reset of an ATS device parks it (recovery_cnt, -EBUSY)
    # Read by the topology prediction, not by these rules: on SMMUv3 a PCI device gets its
    # group only when a driver probes it (6.1, 6.12), or already at device add (7.2).
    smmu_groups_need_driver: bool = True
    description: str = ""

    def blocking_name(self) -> str:
        return "blocked" if self.blocking_type == 0 else "unmanaged"


def _int(text: str) -> int:
    """A number as the module's kstrtoul(s, 0) reads it (lib/kstrtox.c: _parse_integer_fixup_
    radix): an optional '+', then 0x hex, 0 octal or decimal; no sign, no underscores."""
    body = text[1:] if text.startswith("+") else text
    base = 10
    if body[:2].lower() == "0x":
        base, body = 16, body[2:]
    elif body.startswith("0") and len(body) > 1:
        base, body = 8, body[1:]
    if not body or not all(c in "0123456789abcdef"[:base] for c in body.lower()):
        raise ValueError(f"not a number: {text!r}")
    value = int(body, base)
    if value >= 1 << 64:
        raise ValueError(f"out of range: {text!r}")  # kstrtoul: -ERANGE
    return value


def _valid_name(text: str) -> bool:
    return 0 < len(text) <= 15 and all(c.islower() or c.isdigit() or c == "_" for c in text)
