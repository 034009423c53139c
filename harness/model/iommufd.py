"""VFIO's device character device bound to iommufd, as the guest's user-space helper drives it
(guest_modules/tools/ih-vfio.c, the iommufd_* commands), on top of the kernel's DMA-ownership
and attach rules (pure).

The kernel side, in Debian's linux-source-7.2 (the cdev path exists since 6.6; Debian's
packaged kernels leave IOMMUFD off, so these rules run against source-built kernels):

- binding (drivers/vfio/device_cdev.c: vfio_df_ioctl_bind_iommufd): the device is not usable
  through its group at the same time (group.c: vfio_device_block_group, -EBUSY while the
  group's /dev/vfio/N is open; vfio_group_fops_open, -EBUSY while a device of the group is
  bound); then iommufd_device_bind (drivers/iommu/iommufd/device.c) claims DMA ownership of
  the device with the iommufd context as owner (iommu_device_claim_dma_owner): the group goes
  to its blocking domain at the first claim, a second device of the group with the same
  context counts up, anyone else's count is -EPERM;
- attaching (vfio_iommufd_physical_attach_ioas → iommufd_device_attach): to an IOAS, the
  first automatic domain of that IOAS the device can use, else a new one
  (iommufd_device_auto_get_domain); to a HWPT, that domain. The first device of a group
  attaches the group (iommufd_hw_pagetable_attach → iommu_attach_group_handle →
  __iommu_attach_group: -EBUSY unless the group is on its default or blocking domain); a
  later device of the group must use the group's page table (-EINVAL otherwise);
- attaching an attached device replaces (iommufd_device_replace → iommufd_device_do_replace →
  iommu_replace_group_handle): the whole group moves, no detach in between; the same page
  table is a no-op;
- detaching (iommufd_hw_pagetable_detach): the last device of the group out detaches the group
  (iommu_detach_group_handle: back to the blocking domain, the group being owned); a device not
  attached is a no-op that answers 0 (vfio_iommufd_physical_detach_ioas);
- unbinding (closing the device fd: vfio_df_unbind_iommufd → iommufd_device_unbind): detach,
  then iommu_device_release_dma_owner (count down, or back to the default domain; WARN in
  __iommu_release_dma_ownership when nobody owns the group any more);
- IOAS mappings (drivers/iommu/iommufd/io_pagetable.c): a fixed IOVA overlapping an area is
  -EEXIST (iopt_check_iova); an unmap may not cut an area (-ENOENT, iopt_unmap_iova_range),
  and an unmap of nothing is -ENOENT too (drivers/iommu/iommufd/ioas.c: iommufd_ioas_unmap;
  found by the fuzzer: the range walk itself calls it success); IOMMU_DESTROY of an object in
  use (an IOAS under a page table, a page table a device is attached to) is -EBUSY.

The helper refuses (guards) what it has no fd or object for, a second device fd, unaligned
IOVAs and sizes, and closing /dev/iommu with devices bound.
"""

from __future__ import annotations

from .state import (
    BLOCKING,
    DEFAULT,
    EBUSY,
    EEXIST,
    EINVAL,
    EIO,
    ENODEV,
    ENOENT,
    Group,
    Outcome,
    _int,
)
from .vfio import VfioRules

EBADF = 9
IOMMUFD_OWNER = "iommufd"  # the iommufd context the helper's devices are bound with
PAGE = 4096
MAX_DMA = 4096


def iommufd_domain(pt: str) -> str:
    """The domain a page table stands for: an IOAS's automatic domain or a HWPT's own."""
    return f"iommufd:{pt}"


class IommufdRules(VfioRules):
    # ------------------------------------------------------------------ helpers
    def _bound(self, dev: str) -> Group | Outcome:
        if dev not in self.state.iommufd.devices:
            return Outcome.guarded(EBADF)
        g = self.state.group_of(dev)
        return Outcome.guarded(ENODEV) if g is None else g

    def _group_pt(self, g: Group, but: str = "") -> str | None:
        """The page table the group's bound devices are attached to (iommufd_group's)."""
        return next((pt for d, pt in self.state.iommufd.devices.items()
                     if pt is not None and d != but and d in g.members), None)

    def _iommufd_detach(self, dev: str, g: Group) -> None:
        fd = self.state.iommufd
        if fd.devices.get(dev) is None:
            return
        fd.devices[dev] = None
        if self._group_pt(g) is None:  # the last device of the group out: detach the group
            g.domain = self._core_domain(g)
            self.hit("iommufd.group_detached")

    # ------------------------------------------------------------------ the context
    def iommufd_open(self) -> Outcome:
        if self.state.iommufd.open:
            return Outcome.guarded(EBUSY)
        if not self.profile.has_vfio_cdev:
            return self.hit("iommufd.none", Outcome(-ENOENT))  # no /dev/iommu
        self.state.iommufd.open = True
        return Outcome.ok()

    def iommufd_close(self) -> Outcome:
        fd = self.state.iommufd
        if not fd.open or fd.devices:
            return Outcome.guarded(EBADF if not fd.open else EBUSY)
        fd.open = False
        fd.ioas.clear()
        fd.hwpts.clear()
        self.state.maps = {k: v for k, v in self.state.maps.items()
                           if not k[0].startswith("iommufd:")}
        return Outcome.ok()

    # ------------------------------------------------------------------ devices
    def iommufd_bind(self, dev: str) -> Outcome:
        fd = self.state.iommufd
        if not fd.open or dev in fd.devices or dev in self.state.vfio.devices:
            return Outcome.guarded(EBADF if not fd.open else EBUSY)
        if dev not in self.state.vfio.bound:
            return self.hit("iommufd.no_cdev", Outcome(-ENOENT))
        g = self.state.group_of(dev)
        if g is None:
            return Outcome.guarded(ENODEV)
        if g.id in self.state.vfio.groups:
            return self.hit("iommufd.group_file_open", Outcome(-EBUSY))
        out = self._claim_device(g, IOMMUFD_OWNER)
        if not out.rc:
            fd.devices[dev] = None
        return out

    def iommufd_unbind(self, dev: str) -> Outcome:
        g = self._bound(dev)
        if isinstance(g, Outcome):
            return g
        self._iommufd_detach(dev, g)
        del self.state.iommufd.devices[dev]
        out = self._release_device(g)
        warn = self._finish_unbind(dev)  # the close lets a pending unbind complete
        return Outcome(out.rc, warn=out.warn or warn)

    def _release_device(self, g: Group) -> Outcome:
        """iommu_device_release_dma_owner: count down, or back to the default domain; WARN
        (__iommu_release_dma_ownership) when nobody owns the group any more."""
        if g.owner_cnt > 1:
            g.owner_cnt -= 1
            return self.hit("release_dev.count_down")
        if not g.owner_cnt or g.owner is None or g.pasids:
            self.hit("raw_release_group.warn")
            return Outcome(0, warn=self.profile.release_warn)
        g.owner, g.owner_cnt, g.domain = None, 0, DEFAULT
        self._resync(g)
        return self.hit("release_dev.last")

    def iommufd_attach(self, dev: str, pt: str) -> Outcome:
        g = self._bound(dev)
        if isinstance(g, Outcome):
            return g
        fd = self.state.iommufd
        if pt not in fd.ioas and pt not in fd.hwpts:
            return Outcome.guarded(EBADF)
        current = fd.devices[dev]
        if current is not None:  # iommufd_device_replace: the whole group moves
            if current != pt:
                for d in fd.devices:
                    if d in g.members and fd.devices[d] is not None:
                        fd.devices[d] = pt
                g.domain = iommufd_domain(pt)
                self.hit("iommufd.replace")
            return Outcome.ok()
        group_pt = self._group_pt(g)
        if group_pt is not None:  # the group is attached by another device already
            if group_pt != pt:
                return self.hit("iommufd.group_elsewhere", Outcome(-EINVAL))
            fd.devices[dev] = pt
            return self.hit("iommufd.join_group")
        if g.domain not in (DEFAULT, BLOCKING):  # __iommu_attach_group
            return self.hit("attach.busy", Outcome(-EBUSY))
        g.domain = iommufd_domain(pt)
        fd.devices[dev] = pt
        return self.hit("attach.ok")

    def iommufd_detach(self, dev: str) -> Outcome:
        g = self._bound(dev)
        if isinstance(g, Outcome):
            return g
        if self.state.iommufd.devices[dev] is None:
            return self.hit("iommufd.detach_idle")
        self._iommufd_detach(dev, g)
        return Outcome.ok()

    # ------------------------------------------------------------------ IOAS and HWPT
    def iommufd_ioas(self, name: str) -> Outcome:
        fd = self.state.iommufd
        if not fd.open or name in fd.ioas or name in fd.hwpts or len(name) > 15:
            return Outcome.guarded(EBADF if not fd.open else EEXIST)
        fd.ioas.add(name)
        return Outcome.ok()

    def iommufd_hwpt(self, name: str, dev: str, ioas: str) -> Outcome:
        fd = self.state.iommufd
        if (not fd.open or name in fd.ioas or name in fd.hwpts or len(name) > 15
                or ioas not in fd.ioas or dev not in fd.devices):
            return Outcome.guarded(EBADF)
        fd.hwpts[name] = ioas
        return Outcome.ok()

    def iommufd_destroy(self, name: str) -> Outcome:
        fd = self.state.iommufd
        if name not in fd.ioas and name not in fd.hwpts:
            return Outcome.guarded(EBADF)
        users = [pt for pt in fd.devices.values() if pt is not None]
        if name in fd.hwpts:
            if name in users:
                return self.hit("iommufd.destroy_busy", Outcome(-EBUSY))
            del fd.hwpts[name]
            return Outcome.ok()
        if name in users or name in fd.hwpts.values():
            return self.hit("iommufd.destroy_busy", Outcome(-EBUSY))
        fd.ioas.discard(name)
        key = iommufd_domain(name)
        self.state.maps = {k: v for k, v in self.state.maps.items() if k[0] != key}
        return Outcome.ok()

    def _ioas_args(self, name: str, iova: str, size: str) -> tuple[str, int, int] | Outcome:
        if name not in self.state.iommufd.ioas:
            return Outcome.guarded(EBADF)
        start, length = _int(iova), _int(size)
        if not length or (start | length) % PAGE:
            return Outcome.guarded(EINVAL)  # the helper passes page-aligned ranges only
        return iommufd_domain(name), start, length

    def iommufd_map(self, name: str, iova: str, size: str) -> Outcome:
        args = self._ioas_args(name, iova, size)
        if isinstance(args, Outcome):
            return args
        key, start, length = args
        for (k, s), n in self.state.maps.items():
            if k == key and s < start + length and start < s + n:
                return self.hit("iommufd.map_overlap", Outcome(-EEXIST))
        self.state.maps[(key, start)] = length
        return self.hit("map.ok")

    def iommufd_unmap(self, name: str, iova: str, size: str) -> Outcome:
        args = self._ioas_args(name, iova, size)
        if isinstance(args, Outcome):
            return args
        key, start, length = args
        mine = [(s, n) for (k, s), n in self.state.maps.items() if k == key]
        inside = [(s, n) for s, n in mine if s < start + length and start < s + n]
        if any(s < start or s + n > start + length for s, n in inside):
            return self.hit("iommufd.unmap_cuts", Outcome(-ENOENT))
        if not inside:  # ioas.c: iommufd_ioas_unmap, nothing unmapped
            return self.hit("iommufd.unmap_nothing", Outcome(-ENOENT))
        for s, _ in inside:
            del self.state.maps[(key, s)]
        return Outcome.ok()

    # ------------------------------------------------------------------ DMA
    def iommufd_dma(self, dev: str, iova: str, length: str) -> Outcome:
        """edu moves a pattern RAM(iova) → device → RAM(iova + length) through the mappings of
        the IOAS the device is attached to: it comes back only when the device's group is
        really on that page table's domain."""
        g = self._bound(dev)
        if isinstance(g, Outcome):
            return g
        pt = self.state.iommufd.devices[dev]
        start, count = _int(iova), _int(length)
        if pt is None or not 0 < count <= MAX_DMA or not self._maps_all(
                iommufd_domain(pt), start, 2 * count):
            return Outcome.guarded(EINVAL)
        domain = self._dma_domain(dev)
        if domain == iommufd_domain(pt):
            return self.hit("dma.through_domain")
        self.hit("dma.elsewhere")
        return Outcome(-EIO, fault=self._faults(domain, start, count))
