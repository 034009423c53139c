"""PASID attachments (6.11+: iommu_attach_device_pasid with an attach handle) (pure)."""

from __future__ import annotations

from .base import ModelBase
from .state import (
    EBUSY,
    EINVAL,
    ENODEV,
    ENOENT,
    EOPNOTSUPP,
    Group,
    Hold,
    Outcome,
    _int,
)


class PasidRules(ModelBase):
    def _pasid_target(self, handle: str, dev: str, pasid: str) -> Outcome | int:
        """The module's checks of attach_pasid/detach_pasid, in its order."""
        if handle not in self.state.domains:
            return Outcome.guarded(ENOENT)
        try:
            value = _int(pasid)
        except ValueError:
            return Outcome.guarded(EINVAL)
        if not 0 <= value < 1 << 32:
            return Outcome.guarded(EINVAL)
        if dev not in self.state.drivers:
            return Outcome.guarded(ENODEV)
        if not self.profile.has_pasid:
            return Outcome.guarded(EOPNOTSUPP)
        return value

    def attach_pasid(self, handle: str, dev: str, pasid: str) -> Outcome:
        value = self._pasid_target(handle, dev, pasid)
        if isinstance(value, Outcome):
            return value
        # drivers/iommu/iommu.c (6.12.117): iommu_attach_device_pasid — both IOMMUs' paging
        # domains have set_dev_pasid; then -ENODEV without a group, -EINVAL for
        # IOMMU_NO_PASID (0), -EBUSY when the group's pasid_array has it (xa_insert). Devices
        # without PASID support (max_pasids 0, such as edu) skip the range check and
        # set_dev_pasid, so the attach is bookkeeping only. 7.2.13 checks the group first,
        # then set_dev_pasid of the domain and of the driver's blocked domain (both present
        # on VT-d and SMMUv3), then ops and PASID 0, then recovery_cnt (never set for edu,
        # which has no ATS): the same outcomes here (profile field pasid_checks).
        g = self.state.group_of(dev)
        if g is None:
            return self.hit("pasid.no_group", Outcome(-ENODEV))
        if value == 0:
            return self.hit("pasid.zero", Outcome(-EINVAL))
        if value in g.pasids:
            return self.hit("pasid.busy", Outcome(-EBUSY))
        g.pasids[value] = handle
        self.state.holds.append(Hold("pasid", g.id, dev, handle, value))
        return self.hit("pasid.ok")

    def detach_pasid(self, handle: str, dev: str, pasid: str) -> Outcome:
        value = self._pasid_target(handle, dev, pasid)
        if isinstance(value, Outcome):
            return value
        g = self.state.group_of(dev)
        hold = next((h for h in self.state.holds if g is not None and h.kind == "pasid"
                     and h.group == g.id and h.pasid == value and h.domain == handle), None)
        if g is None or hold is None:
            return Outcome.guarded(ENOENT)
        self.state.holds.remove(hold)
        del g.pasids[value]
        return self.hit("pasid.detach")

    def drop_pasids(self, g: Group) -> None:
        """ih_attach's remove callback detaches the module's PASIDs on the device's group."""
        self.state.holds = [h for h in self.state.holds
                            if not (h.kind == "pasid" and h.group == g.id)]
        g.pasids.clear()
