"""DMA ownership: claims and releases of a group or one device, and the unguarded release
that WARNs (pure)."""

from __future__ import annotations

from .base import ModelBase
from .state import (
    BLOCKING,
    DEFAULT,
    EBUSY,
    EINVAL,
    ENODEV,
    ENOENT,
    EOPNOTSUPP,
    EPERM,
    Group,
    Hold,
    Outcome,
    _valid_name,
)


class OwnershipRules(ModelBase):
    # ------------------------------------------------------------------ ownership
    def _claimable(self, dev: str, owner: str) -> Group | Outcome:
        """The module's checks before any claim: an owner name, a device with a group."""
        if not _valid_name(owner):
            return Outcome.guarded(EINVAL)
        return self._device_group(dev)

    def claim_group(self, dev: str, owner: str) -> Outcome:
        g = self._claimable(dev, owner)
        if isinstance(g, Outcome):
            return g
        # drivers/iommu/iommu.c: iommu_group_claim_dma_owner — -EPERM if anyone counts
        # (kernel drivers or a claim, even the same owner); -EBUSY off the default domain.
        if g.owner_cnt:
            return self.hit("claim_group.counted", Outcome(-EPERM))
        # __iommu_take_dma_ownership (6.12): also -EBUSY with PASIDs attached.
        if g.domain != DEFAULT:
            return self.hit("claim_group.off_default", Outcome(-EBUSY))
        if g.pasids:
            return self.hit("claim_group.pasids", Outcome(-EBUSY))
        g.domain, g.owner, g.owner_cnt = BLOCKING, owner, 1
        self.state.holds.append(Hold("claim_group", g.id, dev))
        return self.hit("claim_group.ok")

    def release_group(self, dev: str) -> Outcome:
        if dev not in self.state.drivers:
            return Outcome.guarded(ENODEV)
        g = self.state.group_of(dev)
        hold = self._hold("claim_group", g.id) if g else None
        if g is None or hold is None:
            return Outcome.guarded(ENOENT)
        if self._hold("pasid", g.id):
            return Outcome.guarded(EBUSY)  # the module: a release with PASIDs attached WARNs
        # iommu_group_release_dma_owner: all counts at once, back to the default domain; the
        # module forgets every claim it held on the group (device claims included).
        self.state.holds = [h for h in self.state.holds
                            if not (h.group == g.id and h.kind in ("claim_group", "claim_dev"))]
        g.owner, g.owner_cnt, g.domain = None, 0, DEFAULT
        return self.hit("release_group.ok")

    def claim_dev(self, dev: str, owner: str) -> Outcome:
        g = self._claimable(dev, owner)
        if isinstance(g, Outcome):
            return g
        if not self.profile.has_device_claim:
            return Outcome.guarded(EOPNOTSUPP)
        out = self._claim_device(g, owner)
        if not out.rc:
            self.state.holds.append(Hold("claim_dev", g.id, dev))
        return out

    def release_dev(self, dev: str) -> Outcome:
        if dev not in self.state.drivers:
            return Outcome.guarded(ENODEV)
        g = self.state.group_of(dev)
        hold = self._hold("claim_dev", g.id, dev) if g else None
        if g is None or hold is None:
            return Outcome.guarded(ENOENT)
        if self._hold("pasid", g.id):
            return Outcome.guarded(EBUSY)
        self.state.holds.remove(hold)
        # iommu_device_release_dma_owner: count down, or a full release at the last one.
        if g.owner_cnt > 1:
            g.owner_cnt -= 1
            return self.hit("release_dev.count_down")
        g.owner, g.owner_cnt, g.domain = None, 0, DEFAULT
        return self.hit("release_dev.last")

    def raw_release_group(self, dev: str) -> Outcome:
        g = self._device_group(dev)
        if isinstance(g, Outcome):
            return g
        # iommu_group_release_dma_owner (6.1) / __iommu_release_dma_ownership (6.12):
        # WARN_ON(!owner_cnt || !owner [|| PASIDs attached]) and return.
        if not g.owner_cnt or g.owner is None or g.pasids:
            return self.hit("raw_release_group.warn", Outcome(0, warn=self.profile.release_warn))
        g.owner, g.owner_cnt, g.domain = None, 0, DEFAULT
        self._resync(g)
        return self.hit("raw_release_group.ok")
