"""VFIO's group and container interface, as the guest's user-space helper drives it
(guest_modules/tools/ih-vfio.c), on top of the kernel's DMA-ownership and attach rules (pure).

The kernel side, in Debian's 6.1.192 (drivers/vfio/vfio_main.c, container.c) and 6.12/7.2
(drivers/vfio/group.c, container.c; the container path is the same):

- a group's character device /dev/vfio/N exists while a device of the group is bound to a
  VFIO driver (vfio_register_group_dev); it opens once at a time (vfio_group_fops_open:
  -EBUSY while opened_file is set);
- VFIO_GROUP_GET_STATUS: viable when the group is in a container, or when nobody claimed its
  DMA ownership (iommu_group_dma_owner_claimed: owner_cnt, which kernel DMA-API drivers count
  on too);
- VFIO_GROUP_SET_CONTAINER: -EINVAL when already set; then vfio_container_attach_group claims
  the group's DMA ownership (iommu_group_claim_dma_owner) and, when the container has its
  backend, attaches the group to the backend's domain (iommu_attach_group);
- VFIO_SET_IOMMU: -EINVAL without a group or when set; attaches every group of the container
  (vfio_iommu_type1_attach_group → iommu_attach_group), undoing them all on a failure;
- VFIO_GROUP_GET_DEVICE_FD: -ENODEV for a device not bound to a VFIO driver
  (vfio_device_get_from_name), -EINVAL until the container has its backend
  (vfio_device_assign_container);
- VFIO_GROUP_UNSET_CONTAINER: -EINVAL without a container, -EBUSY while a device is open
  (container_users), else the group is detached (iommu_detach_group) and its ownership
  released (iommu_group_release_dma_owner); the last group out releases the backend.

The helper refuses (guards) what it has no fd for, a second container or device fd, and
closing a group with devices open or a container with groups in it.
"""

from __future__ import annotations

from .dma import DmaRules
from .state import (
    BLOCKING,
    DEFAULT,
    EBUSY,
    EEXIST,
    EINVAL,
    EIO,
    ENODEV,
    ENOENT,
    EPERM,
    NO_DRIVER,
    VFIO_DOMAIN,
    Group,
    Outcome,
    _int,
)

EBADF = 9
VFIO_OWNER = "vfio"
MAX_DMA = 4096  # the helper's longest transfer; it uses [iova, iova + 2 * length)
PAGE = 4096  # type1's smallest IOMMU page here (VT-d and SMMUv3 with 4K pages)


class VfioRules(DmaRules):
    # ------------------------------------------------------------------ helpers
    def _vfio_group(self, dev: str) -> Group | Outcome:
        """The helper's group by device: one it opened (else it refuses, -EBADF)."""
        g = self.state.group_of(dev)
        if g is None:
            return Outcome.guarded(ENODEV)  # the step finds no group number to open
        if g.id not in self.state.vfio.groups:
            return Outcome.guarded(EBADF)
        return g

    def _vfio_attach(self, g: Group) -> Outcome:
        # vfio_iommu_type1_attach_group → iommu_attach_group → __iommu_attach_group: the
        # group must be on its default or blocking domain.
        if g.domain not in (DEFAULT, BLOCKING):
            return self.hit("attach.busy", Outcome(-EBUSY))
        g.domain = VFIO_DOMAIN
        return self.hit("attach.ok")

    def _vfio_release(self, g: Group) -> str:
        """The group leaves the container (vfio_group_detach_container): the backend's detach
        (iommu_detach_group: the core domain, whatever is attached), then
        iommu_group_release_dma_owner, which releases whoever owns the group, or WARNs when
        nobody does (a raw release took VFIO's claim away). The last group out takes the
        backend and its mappings with it. Returns the WARN's function, or ""."""
        vfio = self.state.vfio
        if vfio.iommu:
            g.domain = self._core_domain(g)
        vfio.groups[g.id] = False
        warn = ""
        if not g.owner_cnt or g.owner is None or g.pasids:
            warn = self.profile.release_warn
            self.hit("raw_release_group.warn")
        else:
            g.owner, g.owner_cnt, g.domain = None, 0, DEFAULT
            self._resync(g)
            self.hit("vfio.leave")
        if not any(vfio.groups.values()) and vfio.iommu:
            vfio.iommu = False
            self.state.maps = {k: v for k, v in self.state.maps.items() if k[0] != VFIO_DOMAIN}
        return warn

    def _in_container(self) -> list[Group]:
        return [self.state.groups[gid] for gid, on in self.state.vfio.groups.items() if on]

    # ------------------------------------------------------------------ container and groups
    def vfio_container(self) -> Outcome:
        if self.state.vfio.container:
            return Outcome.guarded(EBUSY)
        self.state.vfio.container = True
        return Outcome.ok()

    def vfio_group(self, dev: str) -> Outcome:
        g = self.state.group_of(dev)
        if g is None:
            return Outcome.guarded(ENODEV)
        if not any(m in self.state.vfio.bound for m in g.members):
            return self.hit("vfio.no_group_file", Outcome(-ENOENT))
        if g.id in self.state.vfio.groups:
            return self.hit("vfio.group_open_once", Outcome(-EBUSY))
        if any(m in self.state.iommufd.devices for m in g.members):
            # group.c (6.6+): vfio_group_fops_open, cdev_device_open_cnt
            return self.hit("vfio.group_cdev_bound", Outcome(-EBUSY))
        self.state.vfio.groups[g.id] = False
        return Outcome.ok()

    def vfio_status(self, dev: str) -> Outcome:
        """The answer is 0 for a viable group, -EPERM for one that is not (the step's
        convention, steps.VfioCall)."""
        g = self._vfio_group(dev)
        if isinstance(g, Outcome):
            return g
        if self.state.vfio.groups[g.id] or not g.owner_cnt:
            return self.hit("vfio.viable")
        return self.hit("vfio.not_viable", Outcome(-EPERM))

    def vfio_set_container(self, dev: str) -> Outcome:
        g = self._vfio_group(dev)
        if isinstance(g, Outcome):
            return g
        vfio = self.state.vfio
        if not vfio.container:
            return Outcome(-EBADF)  # the helper passes fd -1: fdget fails
        if vfio.groups[g.id]:
            return self.hit("vfio.container_set", Outcome(-EINVAL))
        # iommu_group_claim_dma_owner (the same checks as the module's claim)
        if g.owner_cnt:
            return self.hit("claim_group.counted", Outcome(-EPERM))
        if g.domain != DEFAULT:
            return self.hit("claim_group.off_default", Outcome(-EBUSY))
        if g.pasids:
            return self.hit("claim_group.pasids", Outcome(-EBUSY))
        g.domain, g.owner, g.owner_cnt = BLOCKING, VFIO_OWNER, 1
        self.hit("claim_group.ok")
        if vfio.iommu:
            self._vfio_attach(g)  # right after the claim the group is on its blocking domain
        vfio.groups[g.id] = True
        return Outcome.ok()

    def vfio_unset_container(self, dev: str) -> Outcome:
        g = self._vfio_group(dev)
        if isinstance(g, Outcome):
            return g
        if not self.state.vfio.groups[g.id]:
            return self.hit("vfio.no_container", Outcome(-EINVAL))
        if any(self.state.group_of(d) is g for d in self.state.vfio.devices):
            return self.hit("vfio.devices_open", Outcome(-EBUSY))
        return Outcome(0, warn=self._vfio_release(g))

    def vfio_set_iommu(self) -> Outcome:
        vfio = self.state.vfio
        if not vfio.container:
            return Outcome.guarded(EBADF)
        groups = self._in_container()
        if not groups or vfio.iommu:
            return self.hit("vfio.set_iommu_refused", Outcome(-EINVAL))
        done: list[tuple[Group, str]] = []
        for g in groups:
            before = g.domain
            out = self._vfio_attach(g)
            if out.rc:
                for attached, was in done:  # vfio_ioctl_set_iommu: unwind
                    attached.domain = was
                return out
            done.append((g, before))
        vfio.iommu = True
        return Outcome.ok()

    def vfio_close_group(self, dev: str) -> Outcome:
        g = self._vfio_group(dev)
        if isinstance(g, Outcome):
            return g
        if any(self.state.group_of(d) is g for d in self.state.vfio.devices):
            return Outcome.guarded(EBUSY)
        warn = ""
        if self.state.vfio.groups[g.id]:
            warn = self._vfio_release(g)  # vfio_group_fops_release → detach_container
        del self.state.vfio.groups[g.id]
        return Outcome(0, warn=warn)

    def vfio_close_container(self) -> Outcome:
        vfio = self.state.vfio
        if not vfio.container:
            return Outcome.guarded(EBADF)
        if self._in_container():
            return Outcome.guarded(EBUSY)
        vfio.container = False
        return Outcome.ok()

    # ------------------------------------------------------------------ mappings
    def vfio_map(self, iova: str, size: str) -> Outcome:
        vfio = self.state.vfio
        if not vfio.container:
            return Outcome.guarded(EBADF)
        if not vfio.iommu:
            return self.hit("vfio.no_backend", Outcome(-EINVAL))
        start, length = _int(iova), _int(size)
        if not length or (start | length) % PAGE:
            return Outcome(-EINVAL)  # vfio_dma_do_map: a size, page aligned
        for (domain, s), n in self.state.maps.items():
            if domain == VFIO_DOMAIN and s < start + length and start < s + n:
                return self.hit("vfio.map_overlap", Outcome(-EEXIST))  # vfio_find_dma
        self.state.maps[(VFIO_DOMAIN, start)] = length
        return self.hit("map.ok")

    def vfio_unmap(self, iova: str, size: str) -> Outcome:
        vfio = self.state.vfio
        if not vfio.container:
            return Outcome.guarded(EBADF)
        if not vfio.iommu:
            return self.hit("vfio.no_backend", Outcome(-EINVAL))
        start, length = _int(iova), _int(size)
        if not length or (start | length) % PAGE:
            return Outcome(-EINVAL)  # vfio_dma_do_unmap: a size, page aligned
        mine = [(s, n) for (d, s), n in self.state.maps.items() if d == VFIO_DOMAIN]
        if any(s < start < s + n or s < start + length < s + n for s, n in mine):
            return Outcome(-EINVAL)  # type1v2: the range may not bisect a mapping
        for s, n in mine:
            if start <= s and s + n <= start + length:
                del self.state.maps[(VFIO_DOMAIN, s)]
        return Outcome.ok()

    # ------------------------------------------------------------------ devices and DMA
    def vfio_device(self, dev: str) -> Outcome:
        g = self._vfio_group(dev)
        if isinstance(g, Outcome):
            return g
        if dev in self.state.vfio.devices:
            return Outcome.guarded(EBUSY)
        if dev not in self.state.vfio.bound:
            return self.hit("vfio.device_not_vfio", Outcome(-ENODEV))
        if not self.state.vfio.groups[g.id] or not self.state.vfio.iommu:
            return self.hit("vfio.device_no_backend", Outcome(-EINVAL))
        self.state.vfio.devices.add(dev)
        return Outcome.ok()

    def vfio_close_device(self, dev: str) -> Outcome:
        if dev not in self.state.vfio.devices:
            return Outcome.guarded(EBADF)
        self.state.vfio.devices.discard(dev)
        return Outcome(0, warn=self._finish_unbind(dev))

    # ------------------------------------------------------------------ unbinding vfio-pci
    def vfio_unbind(self, dev: str) -> Outcome:
        """vfio-pci's unbind (drivers/vfio/vfio_main.c: vfio_unregister_group_dev) waits until
        user space closes the device, asking it to (the driver's request op, "blocked until
        released by user"); the helper's write stays pending and the step answers 0. A device
        nobody has open is unbound at once."""
        vfio = self.state.vfio
        if dev not in vfio.bound or dev in vfio.unbinding:
            return Outcome.guarded(ENODEV)
        if dev in vfio.devices or dev in self.state.iommufd.devices:
            vfio.unbinding.add(dev)
            return self.hit("vfio.unbind_waits")
        return Outcome(0, warn=self._unbound(dev))

    def _unbound(self, dev: str) -> str:
        """The device leaves vfio-pci (driver_managed_dma: no count changes). When it was the
        group's last VFIO device (vfio_device_remove_group: group->drivers drops to 0), a group
        in a container leaves it, as at UNSET_CONTAINER, though its file stays open. Returns
        the WARN's function, or ""."""
        vfio = self.state.vfio
        self.state.drivers[dev] = NO_DRIVER
        vfio.bound.discard(dev)
        g = self.state.group_of(dev)
        if g is None or any(m in vfio.bound for m in g.members) or not vfio.groups.get(g.id):
            return ""
        self.hit("vfio.last_device_gone")
        return self._vfio_release(g)

    def _finish_unbind(self, dev: str) -> str:
        """The device's last user closed it: a pending unbind completes."""
        if dev not in self.state.vfio.unbinding:
            return ""
        self.state.vfio.unbinding.discard(dev)
        self.hit("vfio.unbind_done")
        return self._unbound(dev)

    def _vfio_mapped(self, start: int, length: int) -> bool:
        return any(d == VFIO_DOMAIN and s <= start and start + length <= s + n
                   for (d, s), n in self.state.maps.items())

    def vfio_dma(self, dev: str, iova: str, length: str) -> Outcome:
        """edu moves a pattern RAM(iova) → device → RAM(iova + length): it comes back only
        through VFIO's domain; through another the helper reads zeros (-EIO) and the IOMMU
        faults unless that domain maps the range."""
        if dev not in self.state.vfio.devices:
            return Outcome.guarded(EBADF)
        start, count = _int(iova), _int(length)
        if not 0 < count <= MAX_DMA or not self._vfio_mapped(start, 2 * count):
            return Outcome.guarded(EINVAL)
        domain = self._dma_domain(dev)
        if domain == VFIO_DOMAIN:
            return self.hit("dma.through_domain")
        self.hit("dma.elsewhere")
        return Outcome(-EIO, fault=self._faults(domain, start, count))

    def vfio_dma_to(self, dev: str, iova: str, length: str) -> Outcome:
        """One transfer device → RAM(iova), wherever that goes: a fault unless mapped."""
        if dev not in self.state.vfio.devices:
            return Outcome.guarded(EBADF)
        start, count = _int(iova), _int(length)
        return Outcome(0, fault=self._faults(self._dma_domain(dev), start, count))
