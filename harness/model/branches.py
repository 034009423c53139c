"""The kernel branches the model knows, each with an id and its source: what rule coverage
counts. A branch is an errno or a state change the kernel (not the ih_attach module's guards)
decides; a step records the branches its model took (``Model.hits``), a run reports the
branches of its profiles that no step took, and a unit test requires the scenario catalogue to
take every branch of every profile on some platform (pure)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .state import Profile

IOMMU_C = "drivers/iommu/iommu.c"
VFIO_C = "drivers/vfio/vfio_main.c (6.1), group.c (6.12+)"
CONTAINER_C = "drivers/vfio/container.c"
VFIO_MAIN = "drivers/vfio/vfio_main.c"
GROUP_C = "drivers/vfio/group.c"
IOMMUFD_DEV = "drivers/iommu/iommufd/device.c"
Applies = Callable[[Profile, bool], bool]  # (profile, the platform is SMMUv3)


def _always(p: Profile, smmu: bool) -> bool:
    return True


def _singleton(p: Profile, smmu: bool) -> bool:
    return p.attach_device_rule == "singleton"


def _proposal(p: Profile, smmu: bool) -> bool:
    return p.attach_device_rule == "proposal-2022"


def _alt(p: Profile, smmu: bool) -> bool:
    return p.attach_device_rule == "proposal-2022-alt"


def _counted(p: Profile, smmu: bool) -> bool:
    return p.attach_device_rule != "singleton"


def _groupless(p: Profile, smmu: bool) -> bool:
    """A test device can lack a group: only on SMMUv3 (one behind a bridge whose sibling took
    the alias stream ID; before 7.x, one no driver has probed)."""
    return smmu


def _device_claim(p: Profile, smmu: bool) -> bool:
    return p.has_device_claim


def _pasid(p: Profile, smmu: bool) -> bool:
    return p.has_pasid


def _cdev(p: Profile, smmu: bool) -> bool:
    return p.has_vfio_cdev


def _no_cdev(p: Profile, smmu: bool) -> bool:
    return not p.has_vfio_cdev


def _type(rule: str) -> Applies:
    return lambda p, smmu: p.type_rule == rule


@dataclass(frozen=True)
class Branch:
    id: str
    source: str  # file:function it follows
    what: str
    applies: Applies = _always


BRANCHES: tuple[Branch, ...] = (
    # domains
    Branch("alloc.ok", f"{IOMMU_C}:iommu_domain_alloc / iommu_paging_domain_alloc",
           "a paging domain is allocated"),
    Branch("alloc.no_iommu", f"{IOMMU_C}:iommu_paging_domain_alloc_flags",
           "-ENODEV for a device without an IOMMU (a group)",
           lambda p, smmu: p.alloc_needs_iommu and smmu),
    Branch("attach.ok", f"{IOMMU_C}:__iommu_attach_group", "the group moves to the domain"),
    Branch("attach.busy", f"{IOMMU_C}:__iommu_attach_group",
           "-EBUSY unless the group is on its default or blocking domain"),
    Branch("attach_dev.no_group", f"{IOMMU_C}:iommu_attach_device", "-ENODEV without a group",
           _groupless),
    Branch("attach_dev.multi_device", f"{IOMMU_C}:iommu_attach_device",
           "-EINVAL unless the group holds exactly one device", _singleton),
    Branch("attach_dev.proposal_busy", "2022 series v1 3/8: iommu_attach_device",
           "-EBUSY: a counted multi-device group on its default domain, or an owned one",
           _proposal),
    Branch("attach_dev.proposal_other_domain", "2022 series v1 3/8: iommu_attach_device",
           "-EPERM: another device of the group is attached to another domain", _proposal),
    Branch("attach_dev.proposal_joins", "2022 series v1 3/8: iommu_attach_device",
           "a second device joins the group's attachment, counted", _proposal),
    Branch("attach_dev.alt_busy", "2022 review (no_kernel_api_dma): iommu_attach_device",
           "-EBUSY: the group is owned or counted by others", _alt),
    Branch("attach_dev.alt_joins", "2022 review (no_kernel_api_dma): iommu_attach_device",
           "a driver_managed_dma device joins the group's attachment, counted", _alt),
    Branch("detach.to_core", f"{IOMMU_C}:__iommu_group_set_core_domain",
           "a detach puts the group back on its default (or, owned, blocking) domain"),
    Branch("detach_dev.still_attached", "2022 series v1 3/8: iommu_detach_device",
           "one count less; other devices keep the domain", _counted),
    Branch("raw_detach_dev.no_group", f"{IOMMU_C}:iommu_detach_device",
           "nothing to do without a group", _groupless),
    Branch("raw_detach_dev.warn", f"{IOMMU_C}:iommu_detach_device",
           "WARN: not the group's domain, or a multi-device group; nothing changes"),
    Branch("raw_detach_group.to_core", f"{IOMMU_C}:iommu_detach_group",
           "back to the core domain whatever is attached"),
    Branch("replace.ok", f"{IOMMU_C}:iommu_group_replace_domain",
           "no ownership, size or current-domain check", lambda p, smmu: p.has_replace),
    # ownership
    Branch("claim_group.counted", f"{IOMMU_C}:iommu_group_claim_dma_owner",
           "-EPERM while anyone counts (a kernel driver, a claim)"),
    Branch("claim_group.off_default", f"{IOMMU_C}:__iommu_take_dma_ownership",
           "-EBUSY while a domain other than the default is attached"),
    Branch("claim_group.pasids", f"{IOMMU_C}:__iommu_take_dma_ownership",
           "-EBUSY with PASIDs attached", _pasid),
    Branch("claim_group.ok", f"{IOMMU_C}:__iommu_take_dma_ownership",
           "owned: the blocking domain, owner_cnt 1"),
    Branch("release_group.ok", f"{IOMMU_C}:iommu_group_release_dma_owner",
           "every count dropped, back to the default domain"),
    Branch("claim_dev.other_owner", f"{IOMMU_C}:iommu_device_claim_dma_owner",
           "-EPERM: counted by another owner or by kernel drivers", _device_claim),
    Branch("claim_dev.same_owner", f"{IOMMU_C}:iommu_device_claim_dma_owner",
           "the same owner counts up", _device_claim),
    Branch("claim_dev.off_default", f"{IOMMU_C}:__iommu_take_dma_ownership",
           "-EBUSY while a domain other than the default is attached", _device_claim),
    Branch("claim_dev.pasids", f"{IOMMU_C}:__iommu_take_dma_ownership",
           "-EBUSY with PASIDs attached",
           lambda p, smmu: p.has_device_claim and p.has_pasid),
    Branch("claim_dev.ok", f"{IOMMU_C}:iommu_device_claim_dma_owner",
           "owned: the blocking domain, owner_cnt 1", _device_claim),
    Branch("release_dev.count_down", f"{IOMMU_C}:iommu_device_release_dma_owner",
           "one count less", _device_claim),
    Branch("release_dev.last", f"{IOMMU_C}:iommu_device_release_dma_owner",
           "the last count: back to the default domain", _device_claim),
    Branch("raw_release_group.warn", f"{IOMMU_C}:iommu_group_release_dma_owner / "
           "__iommu_release_dma_ownership", "WARN: not owned (or PASIDs attached)"),
    Branch("raw_release_group.ok", f"{IOMMU_C}:iommu_group_release_dma_owner",
           "an owned group released without the module's bookkeeping"),
    Branch("bind.counts", f"{IOMMU_C}:iommu_device_use_default_domain",
           "a DMA-API driver's probe counts on the group"),
    Branch("bind.refused", f"{IOMMU_C}:iommu_device_use_default_domain",
           "-EBUSY at probe: the group is owned, off its default domain or has PASIDs"),
    Branch("probe.group_birth", "drivers/base/dd.c:really_probe -> iommu_probe_device",
           "SMMUv3 before 7.x: a device's first probe gives it its group",
           lambda p, smmu: smmu and p.smmu_groups_need_driver),
    # PASID
    Branch("pasid.no_group", f"{IOMMU_C}:iommu_attach_device_pasid", "-ENODEV without a group",
           lambda p, smmu: p.has_pasid and smmu),
    Branch("pasid.zero", f"{IOMMU_C}:iommu_attach_device_pasid", "-EINVAL for IOMMU_NO_PASID",
           _pasid),
    Branch("pasid.busy", f"{IOMMU_C}:iommu_attach_device_pasid",
           "-EBUSY: the group's pasid_array has it", _pasid),
    Branch("pasid.ok", f"{IOMMU_C}:iommu_attach_device_pasid", "recorded in pasid_array",
           _pasid),
    Branch("pasid.detach", f"{IOMMU_C}:iommu_detach_device_pasid", "removed from pasid_array",
           _pasid),
    # sysfs type
    Branch("type.no_group", f"{IOMMU_C}:iommu_group_store_type",
           "-ENOENT: without a group there is no type file", _groupless),
    Branch("type.bad_request", f"{IOMMU_C}:iommu_group_store_type", "-EINVAL: an unknown type"),
    Branch("type.dma_to_fq", f"{IOMMU_C}:iommu_group_store_type",
           "DMA to DMA-FQ in place, whatever the group's state", _type("6.12")),
    Branch("type.counted", f"{IOMMU_C}:iommu_group_store_type",
           "-EPERM while anyone counts on the group", _type("6.12")),
    Branch("type.multi_device", f"{IOMMU_C}:iommu_group_store_type",
           "-EINVAL for a group of more than one device", _type("6.1")),
    Branch("type.bound", f"{IOMMU_C}:iommu_group_store_type",
           "-EBUSY with a driver bound (DMA to DMA-FQ excepted)", _type("6.1")),
    Branch("type.off_default", f"{IOMMU_C}:iommu_change_dev_def_domain",
           "-EBUSY off the default domain", _type("6.1")),
    Branch("type.change", f"{IOMMU_C}:iommu_setup_default_domain / "
           "iommu_change_dev_def_domain", "a new default domain of the type asked for"),
    # DMA and mappings
    Branch("map.ok", f"{IOMMU_C}:iommu_map", "mapped"),
    Branch("map.unfinalised", "drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c:"
           "arm_smmu_domain_finalise", "-ENODEV: no page table before the first attach",
           lambda p, smmu: smmu and p.smmu_finalise_at_attach),
    Branch("dma.through_domain", "guest_modules/ih_attach.c:op_dma",
           "the pattern comes back through the domain that translates the device"),
    Branch("dma.elsewhere", "guest_modules/ih_attach.c:op_dma",
           "-EIO: another domain translates the device"),
    Branch("dma.fault", "drivers/iommu/intel/dmar.c:dmar_fault / arm-smmu-v3.c:"
           "arm_smmu_evtq_thread", "the IOMMU reports the unmapped access"),
    # VFIO's group and container interface (model/vfio.py)
    Branch("vfio.no_group_file", f"{VFIO_C}:vfio_register_group_dev",
           "-ENOENT: no device of the group is bound to vfio-pci, so no /dev/vfio/N"),
    Branch("vfio.group_open_once", f"{VFIO_C}:vfio_group_fops_open",
           "-EBUSY: the group is open already"),
    Branch("vfio.viable", f"{VFIO_C}:vfio_group_ioctl_get_status",
           "viable: in a container, or nobody claimed the group's DMA ownership"),
    Branch("vfio.not_viable", f"{VFIO_C}:vfio_group_ioctl_get_status",
           "not viable: a kernel driver or another owner counts on the group"),
    Branch("vfio.container_set", f"{VFIO_C}:vfio_group_ioctl_set_container",
           "-EINVAL: the group is in a container already"),
    Branch("vfio.no_container", f"{VFIO_C}:vfio_group_ioctl_unset_container",
           "-EINVAL: the group is in no container"),
    Branch("vfio.devices_open", f"{VFIO_C}:vfio_group_ioctl_unset_container",
           "-EBUSY: a device of the group is open (container_users)"),
    Branch("vfio.leave", f"{CONTAINER_C}:vfio_group_detach_container",
           "the group is detached and its DMA ownership released"),
    Branch("vfio.set_iommu_refused", f"{CONTAINER_C}:vfio_ioctl_set_iommu",
           "-EINVAL: no group in the container, or its backend is set"),
    Branch("vfio.no_backend", f"{CONTAINER_C}:vfio_fops_unl_ioctl",
           "-EINVAL: a map or unmap before VFIO_SET_IOMMU"),
    Branch("vfio.map_overlap", "drivers/vfio/vfio_iommu_type1.c:vfio_dma_do_map",
           "-EEXIST: the range overlaps a mapping"),
    Branch("vfio.device_not_vfio", f"{VFIO_C}:vfio_device_get_from_name",
           "-ENODEV: the device is not bound to vfio-pci"),
    Branch("vfio.device_no_backend", f"{CONTAINER_C}:vfio_device_assign_container",
           "-EINVAL: no container, or the container has no backend yet"),
    Branch("vfio.unbind_waits", f"{VFIO_MAIN}:vfio_unregister_group_dev",
           "an unbind of a device user space has open waits for it to close the device"),
    Branch("vfio.unbind_done", f"{VFIO_MAIN}:vfio_unregister_group_dev",
           "the last close completes the pending unbind: the device leaves vfio-pci"),
    Branch("vfio.last_device_gone", f"{VFIO_C}:vfio_device_remove_group",
           "the group's last VFIO device unregistered: the group leaves its container"),
    Branch("vfio.group_cdev_bound", "drivers/vfio/group.c:vfio_group_fops_open",
           "-EBUSY: a device of the group is bound through its cdev", _cdev),
    # iommufd and VFIO's device cdev (model/iommufd.py); Debian 7.2.13's sources
    Branch("iommufd.none", "drivers/iommu/Kconfig (6.1)",
           "-ENOENT: no /dev/iommu", _no_cdev),
    Branch("iommufd.no_cdev", f"{VFIO_MAIN}:vfio_device_add",
           "-ENOENT: the device is not on vfio-pci, so no /dev/vfio/devices/vfioN", _cdev),
    Branch("iommufd.group_file_open", f"{GROUP_C}:vfio_device_block_group",
           "-EBUSY: the device's group is open through /dev/vfio/N", _cdev),
    Branch("iommufd.join_group", f"{IOMMUFD_DEV}:iommufd_hw_pagetable_attach",
           "a second device of the group joins the group's page table (no iommu call)", _cdev),
    Branch("iommufd.group_elsewhere", f"{IOMMUFD_DEV}:iommufd_hw_pagetable_attach",
           "-EINVAL: the device's group is attached to another page table", _cdev),
    Branch("iommufd.replace", f"{IOMMUFD_DEV}:iommufd_device_do_replace",
           "an attached device's group moves to another domain, no detach between", _cdev),
    Branch("iommufd.detach_idle", "drivers/vfio/iommufd.c:vfio_iommufd_physical_detach_ioas",
           "a detach of a device not attached does nothing and answers 0", _cdev),
    Branch("iommufd.group_detached", f"{IOMMUFD_DEV}:iommufd_hw_pagetable_detach",
           "the group's last attached device out: the group back on its blocking domain",
           _cdev),
    Branch("iommufd.map_overlap", "drivers/iommu/iommufd/io_pagetable.c:iopt_check_iova",
           "-EEXIST: a fixed IOVA overlapping a mapping of the IOAS", _cdev),
    Branch("iommufd.unmap_cuts", "drivers/iommu/iommufd/io_pagetable.c:iopt_unmap_iova_range",
           "-ENOENT: an unmap that would cut a mapping", _cdev),
    Branch("iommufd.unmap_nothing", "drivers/iommu/iommufd/ioas.c:iommufd_ioas_unmap",
           "-ENOENT: an unmap of a range with nothing mapped", _cdev),
    Branch("iommufd.destroy_busy", "drivers/iommu/iommufd/main.c:iommufd_destroy",
           "-EBUSY: the object is in use (an IOAS under a page table, a page table attached)",
           _cdev),
)
BY_ID = {b.id: b for b in BRANCHES}


def applicable(profile: Profile, smmu: bool) -> list[Branch]:
    """The branches a guest of this profile and platform can take."""
    return [b for b in BRANCHES if b.applies(profile, smmu)]


def missed(profile: Profile, smmu: bool, hits: Iterable[str]) -> list[Branch]:
    """The applicable branches not among ``hits``."""
    taken = set(hits)
    return [b for b in applicable(profile, smmu) if b.id not in taken]
