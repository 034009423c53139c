"""The reference model of the kernel's IOMMU attach and DMA-ownership rules (pure, no I/O).

State mirrors what drivers/iommu/iommu.c keeps (struct iommu_group: domain, default_domain,
blocking_domain, owner, owner_cnt) plus what the ih_attach module tracks (its domain handles,
the attachments and claims it made, its mappings), because the system under test is the
kernel *and* the module: the module refuses ("guards") calls that would WARN.

Every operation returns an :class:`Outcome` (the rc, whether the module guarded, and what the
kernel would WARN about) and changes the state as the kernel would. Rules cite
file:function of Debian's 6.1.192 / 6.12.117 sources (7.2.13 where it differs); a
:class:`Profile` overrides the ones that differ between versions or proposals, and
harness/model/rules.py cites every profile field. The rules live by concern: domains.py
(alloc, attach, detach, replace), ownership.py, pasid.py, sysfs_type.py, dma.py; this module
puts them together, with the reset, the reads and the operation table.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from .domains import DomainRules
from .iommufd import IOMMUFD_OWNER, IommufdRules
from .ownership import OwnershipRules
from .pasid import PasidRules
from .state import (
    BLOCKING,
    DEFAULT,
    DMA_API,
    DOMAIN_TYPES,
    EBUSY,
    EEXIST,
    EINVAL,
    EIO,
    ENODEV,
    ENOENT,
    ENOSPC,
    EOPNOTSUPP,
    EPERM,
    NO_DRIVER,
    OWNED,
    TYPE_REQUESTS,
    USER_DOMAINS,
    VFIO_DOMAIN,
    Group,
    Hold,
    Outcome,
    Profile,
    State,
    _int,
)
from .sysfs_type import TypeRules
from .vfio import VFIO_OWNER

__all__ = ["BLOCKING", "DEFAULT", "DMA_API", "DOMAIN_TYPES", "EBUSY", "EEXIST", "EINVAL", "EIO",
           "ENODEV", "ENOENT", "ENOSPC", "EOPNOTSUPP", "EPERM", "NO_DRIVER", "OPERATIONS",
           "OPERATION_ARGS", "OWNED", "TYPE_REQUESTS", "Group", "Hold", "Model", "Outcome",
           "Profile", "State", "_int"]


class Model(DomainRules, OwnershipRules, PasidRules, TypeRules, IommufdRules):
    def reset(self) -> Outcome:
        for h in list(self.state.holds):
            g = self.state.groups[h.group]
            if h.kind in ("attach_dev", "attach_group") and g.domain == h.domain:
                g.domain = self._core_domain(g)
            elif h.kind in ("claim_group", "claim_dev"):
                g.owner, g.owner_cnt, g.domain = None, 0, DEFAULT
        for g in self.state.groups.values():
            if g.owner in (VFIO_OWNER, IOMMUFD_OWNER):
                continue  # the module's reset leaves user space's claims alone
            g.owner_cnt = sum(1 for d in g.members if self.state.drivers.get(d) == DMA_API)
            g.pasids.clear()
        self.state.holds.clear()
        self.state.maps = {k: v for k, v in self.state.maps.items()
                           if k[0].startswith(USER_DOMAINS)}
        self.state.domains.clear()
        return Outcome.ok()

    # ------------------------------------------------------------------ reads
    def domain_of(self, dev: str) -> str:
        """What ih_attach's `state` reports: @handle, default, blocked/unmanaged, none."""
        g = self.state.group_of(dev)
        if g is None:
            return "none"
        if g.domain == DEFAULT:
            return "identity" if g.dtype == "identity" else "default"
        if g.domain == BLOCKING:
            return self.profile.blocking_name()
        if g.domain == VFIO_DOMAIN or g.domain.startswith("iommufd:"):
            return "unmanaged"  # user space's domain (type1, iommufd), not one of the module's
        return f"@{g.domain}"

    def type_of(self, dev: str) -> str:
        """The group's sysfs ``type`` ("none" without a group)."""
        g = self.state.group_of(dev)
        return "none" if g is None else g.dtype

    # ------------------------------------------------------------------ dispatch
    def apply(self, line: str) -> Outcome:
        """One ih_attach operation line (device names are PCI addresses)."""
        words = line.split()
        if not words:
            raise ValueError("empty operation")
        op, args = words[0], words[1:]
        handler = _DISPATCH.get(op)
        if handler is None:
            return Outcome.guarded(EINVAL)
        try:
            return handler(self, *args)
        except (TypeError, ValueError):
            return Outcome.guarded(EINVAL)


_DISPATCH: dict[str, Callable[..., Outcome]] = {
    "alloc": Model.alloc, "free": Model.free,
    "attach_dev": Model.attach_dev, "detach_dev": Model.detach_dev,
    "attach_group": Model.attach_group, "detach_group": Model.detach_group,
    "claim_group": Model.claim_group, "release_group": Model.release_group,
    "claim_dev": Model.claim_dev, "release_dev": Model.release_dev,
    "map": lambda m, h, iova, size: m.map(h, _int(iova), _int(size)),
    "unmap": lambda m, h, iova: m.unmap(h, _int(iova)),
    "reset": Model.reset,
    "raw_detach_dev": Model.raw_detach_dev, "raw_detach_group": Model.raw_detach_group,
    "raw_release_group": Model.raw_release_group, "replace": Model.replace,
    "attach_pasid": Model.attach_pasid, "detach_pasid": Model.detach_pasid,
    "set_type": Model.set_type, "dma": Model.dma, "dma_raw": Model.dma_raw,
    # VFIO from the guest's user space (ih-vfio), model/vfio.py
    "vfio_container": Model.vfio_container, "vfio_group": Model.vfio_group,
    "vfio_status": Model.vfio_status, "vfio_set_container": Model.vfio_set_container,
    "vfio_unset_container": Model.vfio_unset_container, "vfio_set_iommu": Model.vfio_set_iommu,
    "vfio_map": Model.vfio_map, "vfio_unmap": Model.vfio_unmap,
    "vfio_device": Model.vfio_device, "vfio_dma": Model.vfio_dma,
    "vfio_dma_to": Model.vfio_dma_to, "vfio_close_device": Model.vfio_close_device,
    "vfio_close_group": Model.vfio_close_group,
    "vfio_close_container": Model.vfio_close_container, "vfio_unbind": Model.vfio_unbind,
    # iommufd and the device cdev from the guest's user space (ih-vfio), model/iommufd.py
    "iommufd_open": Model.iommufd_open, "iommufd_close": Model.iommufd_close,
    "iommufd_bind": Model.iommufd_bind, "iommufd_unbind": Model.iommufd_unbind,
    "iommufd_ioas": Model.iommufd_ioas, "iommufd_hwpt": Model.iommufd_hwpt,
    "iommufd_map": Model.iommufd_map, "iommufd_unmap": Model.iommufd_unmap,
    "iommufd_attach": Model.iommufd_attach, "iommufd_detach": Model.iommufd_detach,
    "iommufd_dma": Model.iommufd_dma, "iommufd_destroy": Model.iommufd_destroy,
}
# Every operation the model (and so a scenario step) knows.
OPERATIONS = tuple(_DISPATCH)
# Each operation's arguments, by name (a "dev" is a device): what a scenario file is checked
# against before any guest boots.
OPERATION_ARGS: dict[str, tuple[str, ...]] = {
    name: tuple(list(inspect.signature(handler).parameters)[1:])
    for name, handler in _DISPATCH.items()}
