"""Writes to a group's sysfs `type` (iommu_group_store_type) (pure)."""

from __future__ import annotations

from .base import ModelBase
from .state import (
    DEFAULT,
    EBUSY,
    EINVAL,
    ENOENT,
    EPERM,
    NO_DRIVER,
    TYPE_REQUESTS,
    Outcome,
)


class TypeRules(ModelBase):
    # ------------------------------------------------------------------ sysfs type
    def set_type(self, dev: str, request: str) -> Outcome:
        """A write of ``request`` to the group's sysfs ``type`` (iommu_group_store_type)."""
        g = self.state.group_of(dev)
        if g is None:
            # no iommu_group link: the file does not exist
            return self.hit("type.no_group", Outcome(-ENOENT))
        if request not in TYPE_REQUESTS:
            return self.hit("type.bad_request", Outcome(-EINVAL))
        target = self.auto_type if request == "auto" else request
        if self.profile.type_rule == "6.12":
            # drivers/iommu/iommu.c (6.12): DMA → DMA-FQ in place whatever the group's state;
            # otherwise -EPERM while anyone counts (bound DMA-API drivers or an owner); any
            # group size; iommu_setup_default_domain moves the group to the new default
            # domain even off an attached domain, and a same-type request changes nothing.
            if request == "DMA-FQ" and g.dtype == "DMA":
                g.dtype = "DMA-FQ"
                return self.hit("type.dma_to_fq")
            if g.owner_cnt:
                return self.hit("type.counted", Outcome(-EPERM))
            if target != g.dtype:
                g.dtype, g.domain = target, DEFAULT
            return self.hit("type.change")
        # drivers/iommu/iommu.c (6.1): iommu_group_store_type — -EINVAL for more than one
        # device, -EBUSY with any driver bound (unless DMA → DMA-FQ);
        # iommu_change_dev_def_domain — -EBUSY off the default domain, same type a no-op.
        if len(g.members) != 1:
            return self.hit("type.multi_device", Outcome(-EINVAL))
        bound = self.state.drivers.get(dev, NO_DRIVER) != NO_DRIVER
        if bound and not (request == "DMA-FQ" and g.dtype == "DMA"):
            return self.hit("type.bound", Outcome(-EBUSY))
        if g.domain != DEFAULT:
            return self.hit("type.off_default", Outcome(-EBUSY))
        g.dtype = target
        return self.hit("type.change")
