"""Domains and attachments: alloc and free, attach and detach of devices and groups (with
the 2022 proposals' device rule), their unguarded WARN paths, and replace (pure)."""

from __future__ import annotations

from .base import ModelBase
from .state import (
    DEFAULT,
    EBUSY,
    EEXIST,
    EINVAL,
    ENODEV,
    ENOENT,
    ENOSPC,
    EOPNOTSUPP,
    EPERM,
    OWNED,
    Group,
    Hold,
    Outcome,
    _valid_name,
)


class DomainRules(ModelBase):
    # ------------------------------------------------------------------ domains
    def alloc(self, handle: str, dev: str) -> Outcome:
        if not _valid_name(handle):
            return Outcome.guarded(EINVAL)
        if handle in self.state.domains:
            return Outcome.guarded(EEXIST)
        if len(self.state.domains) >= 64:
            return Outcome.guarded(ENOSPC)
        if dev not in self.state.drivers:
            return Outcome.guarded(ENODEV)
        # 6.12 iommu_paging_domain_alloc(dev): -ENODEV without an IOMMU for dev; 6.1
        # iommu_domain_alloc(bus) only needs the bus's ops.
        if self.profile.alloc_needs_iommu and self.state.group_of(dev) is None:
            return self.hit("alloc.no_iommu", Outcome(-ENODEV))
        self.state.domains[handle] = not (self.smmu and self.profile.smmu_finalise_at_attach)
        return self.hit("alloc.ok")

    def free(self, handle: str) -> Outcome:
        if handle not in self.state.domains:
            return Outcome.guarded(ENOENT)
        if any(h.domain == handle for h in self.state.holds) or \
                any(k[0] == handle for k in self.state.maps):
            return Outcome.guarded(EBUSY)
        del self.state.domains[handle]
        return Outcome.ok()

    # ------------------------------------------------------------------ attach
    def attach_dev(self, handle: str, dev: str) -> Outcome:
        refused = self._refuse(handle, dev)
        if refused:
            return refused
        g = self.state.group_of(dev)
        if g is None:
            return self.hit("attach_dev.no_group", Outcome(-ENODEV))
        rule = self.profile.attach_device_rule
        if rule == "singleton":
            # drivers/iommu/iommu.c: iommu_attach_device — -EINVAL unless the group holds
            # exactly one device; no ownership check.
            if len(g.members) != 1:
                return self.hit("attach_dev.multi_device", Outcome(-EINVAL))
            out = self._attach_group_rule(handle, g)
        elif rule == "proposal-2022":
            out = self._attach_dev_proposal(handle, dev, g)
        else:
            out = self._attach_dev_alt(handle, dev, g)
        if out.rc == 0:
            self.state.holds.append(Hold("attach_dev", g.id, dev, handle))
        return out

    def _attach_dev_proposal(self, handle: str, dev: str, g: Group) -> Outcome:
        # "Scrap iommu_attach/detach_group() interfaces" v1 3/8 (2022-01-06): counts
        # attachments in the group; owner_cnt counts them too.
        attached = len(self._device_attachments(g))
        if g.owner_cnt and ((g.domain == DEFAULT and len(g.members) != 1) or g.owner):
            return self.hit("attach_dev.proposal_busy", Outcome(-EBUSY))
        if not attached:
            out = self._attach_group_rule(handle, g)
            if out.rc:
                return out
        elif g.domain != handle:
            return self.hit("attach_dev.proposal_other_domain", Outcome(-EPERM))
        else:
            self.hit("attach_dev.proposal_joins")
        g.owner_cnt += 1
        return Outcome.ok()

    def _attach_dev_alt(self, handle: str, dev: str, g: Group) -> Outcome:
        # Jason Gunthorpe's alternative (2022-01-06): by the driver's no_kernel_api_dma.
        if self.state.drivers.get(dev) != OWNED:
            if g.owner_cnt > 1 or g.owner:
                return self.hit("attach_dev.alt_busy", Outcome(-EBUSY))
            return self._attach_group_rule(handle, g)
        if not g.owner_cnt:
            out = self._attach_group_rule(handle, g)
            if out.rc:
                return out
        elif g.owner or g.domain != handle:
            return self.hit("attach_dev.alt_busy", Outcome(-EBUSY))
        else:
            self.hit("attach_dev.alt_joins")
        g.owner_cnt += 1
        return Outcome.ok()

    def detach_dev(self, handle: str, dev: str) -> Outcome:
        refused = self._refuse(handle, dev)
        if refused:
            return refused
        found = self._attached("attach_dev", handle, dev)
        if found is None:
            return Outcome.guarded(ENOENT)
        g, hold = found
        self.state.holds.remove(hold)
        if self.profile.attach_device_rule != "singleton":
            g.owner_cnt = max(0, g.owner_cnt - 1)
            if self._device_attachments(g):
                return self.hit("detach_dev.still_attached")
        g.domain = self._core_domain(g)
        return self.hit("detach.to_core")

    def attach_group(self, handle: str, dev: str) -> Outcome:
        g = self._handle_group(handle, dev)
        if isinstance(g, Outcome):
            return g
        # drivers/iommu/iommu.c: iommu_attach_group — any group size, no ownership check.
        out = self._attach_group_rule(handle, g)
        if out.rc == 0:
            self.state.holds.append(Hold("attach_group", g.id, dev, handle))
        return out

    def detach_group(self, handle: str, dev: str) -> Outcome:
        refused = self._refuse(handle, dev)
        if refused:
            return refused
        found = self._attached("attach_group", handle, dev)
        if found is None:
            return Outcome.guarded(ENOENT)
        g, hold = found
        self.state.holds.remove(hold)
        # drivers/iommu/iommu.c: iommu_detach_group → __iommu_group_set_core_domain
        g.domain = self._core_domain(g)
        return self.hit("detach.to_core")

    # ------------------------------------------------------------------ no guard: WARN paths
    def raw_detach_dev(self, handle: str, dev: str) -> Outcome:
        refused = self._refuse(handle, dev)
        if refused:
            return refused
        g = self.state.group_of(dev)
        if g is None:
            return self.hit("raw_detach_dev.no_group")  # iommu_detach_device: nothing to do
        if self.profile.attach_device_rule != "singleton":
            return self._raw_detach_dev_counted(handle, dev, g)
        # drivers/iommu/iommu.c: iommu_detach_device — WARN_ON(domain != group->domain) ||
        # WARN_ON(more than one device), and nothing changes (6.1 and 6.12 alike).
        if g.domain != handle or len(g.members) != 1:
            return self.hit("raw_detach_dev.warn", Outcome(0, warn="iommu_detach_device"))
        g.domain = self._core_domain(g)
        self._resync(g)
        return self.hit("detach.to_core")

    def _raw_detach_dev_counted(self, handle: str, dev: str, g: Group) -> Outcome:
        # Patch 3/8 of the 2022 series: WARN and return unless something is attached with
        # the device API (attach_cnt), owner_cnt counts it and d is the group's domain; then
        # one count less each, the core domain at the last. The review's alternative left
        # detach unspecified; the same rule is assumed.
        attached = self._device_attachments(g)
        if g.domain != handle or not attached or not g.owner_cnt:
            return self.hit("raw_detach_dev.warn", Outcome(0, warn="iommu_detach_device"))
        mine = [h for h in attached if h.device == dev]
        self.state.holds.remove((mine or attached)[0])
        g.owner_cnt -= 1
        if len(attached) == 1:
            g.domain = self._core_domain(g)
            return self.hit("detach.to_core")
        return self.hit("detach_dev.still_attached")

    def raw_detach_group(self, handle: str, dev: str) -> Outcome:
        g = self._handle_group(handle, dev)
        if isinstance(g, Outcome):
            return g
        # iommu_detach_group: back to the core domain whatever is attached; no check at all.
        if self.profile.attach_device_rule != "singleton" and g.domain != self._core_domain(g):
            # The proposals count device attachments in owner_cnt; they go with the domain.
            g.owner_cnt -= len(self._device_attachments(g))
        g.domain = self._core_domain(g)
        self._resync(g)
        return self.hit("raw_detach_group.to_core")

    # ------------------------------------------------------------------ replace, PASID
    def replace(self, handle: str, dev: str) -> Outcome:
        g = self._handle_group(handle, dev)
        if isinstance(g, Outcome):
            return g
        if not self.profile.has_replace:
            # Not exported before 6.6, and gone in 7.2.13 (iommu.c has no such function;
            # iommufd uses iommu_replace_group_handle): ih_attach.c's op_replace is built
            # without it (Kbuild looks in Module.symvers) and answers guard=1.
            return Outcome.guarded(EOPNOTSUPP)
        # drivers/iommu/iommu.c (6.12): iommu_group_replace_domain → __iommu_group_set_domain:
        # no ownership, size or current-domain check; the same domain is a no-op.
        g.domain = handle
        self.state.domains[handle] = True
        self._resync(g)
        if not any(h.group == g.id and h.domain == handle and h.kind in ("attach_dev",
                                                                          "attach_group")
                   for h in self.state.holds):
            self.state.holds.append(Hold("attach_group", g.id, dev, handle))
        return self.hit("replace.ok")
