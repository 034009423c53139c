"""The model's common part: its state, group birth at probe, the helpers every rule uses, and
the record of which kernel branches the steps took (harness/model/branches.py)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Self

from .branches import BY_ID
from .state import (
    BLOCKING,
    DEFAULT,
    DMA_API,
    EBUSY,
    ENODEV,
    ENOENT,
    EPERM,
    Group,
    Hold,
    Outcome,
    Profile,
    State,
)


class ModelBase:
    def __init__(self, profile: Profile, platform_smmu: bool, groups: Mapping[int, Sequence[str]],
                 drivers: Mapping[str, str], types: Mapping[int, str] | None = None,
                 auto_type: str = "DMA", dma_alias: Mapping[str, str] | None = None,
                 births: Mapping[str, str] | None = None) -> None:
        """``types``: each group's default domain type as the guest shows it (default "DMA");
        ``auto_type``: what a write of "auto" gives, the kernel's iommu_def_domain_type as
        the groups nobody changed show it."""
        self.profile = profile
        self.hits: list[str] = []  # the kernel branches taken, in order (branches.py)
        self.smmu = platform_smmu
        self.auto_type = auto_type
        # A device behind a PCIe-to-PCI bridge → the bridge: whose group's domain translates
        # its DMA when it has no group of its own (SMMUv3: the shared alias stream ID).
        self.dma_alias = dict(dma_alias or {})
        # Where groups are made at driver probe (SMMUv3 before 7.x): a device without a group
        # → where a probe puts it: "alias:<bridge>" (the bridge's group, unless a sibling
        # behind that bridge took the alias) or "slot:<key>" (its root-bus slot's group).
        self.births = dict(births or {})
        types = types or {}
        self.state = State(
            groups={gid: Group(gid, list(members), dtype=types.get(gid, auto_type))
                    for gid, members in groups.items()},
            device_group={d: gid for gid, members in groups.items() for d in members},
            drivers=dict(drivers))
        # Bound DMA-API drivers hold a count on their group
        # (drivers/iommu/iommu.c: iommu_device_use_default_domain, called at probe).
        for dev, drv in self.state.drivers.items():
            g = self.state.group_of(dev)
            if drv == DMA_API and g is not None:
                g.owner_cnt += 1

    def probe(self, dev: str) -> None:
        """A driver probes ``dev``: on SMMUv3 before 7.x that is when its group is made
        (drivers/base/dd.c: really_probe → pci_dma_configure → of_dma_configure →
        iommu_probe_device), whether or not the probe then succeeds. Behind a PCIe-to-PCI
        bridge it joins the bridge's group unless a sibling took the shared alias stream ID
        (arm-smmu-v3.c: arm_smmu_insert_master refuses it twice); on the root bus it joins its
        slot's group or forms a new one (iommu.c: pci_device_group)."""
        key = self.births.get(dev)
        if key is None or dev in self.state.device_group:
            return
        kind, _, where = key.partition(":")
        if kind == "alias":
            gid = self.state.device_group.get(where)
            if gid is None or any(self.dma_alias.get(m) == where
                                  for m in self.state.groups[gid].members):
                return
        else:
            gid = next((self.state.device_group[d] for d, k in self.births.items()
                        if k == key and d in self.state.device_group), None)
            if gid is None:
                gid = max(self.state.groups, default=-1) + 1
                self.state.groups[gid] = Group(gid, [], dtype=self.auto_type)
        self.state.groups[gid].members.append(dev)
        self.state.device_group[dev] = gid
        self.hit("probe.group_birth")

    def hit(self, branch: str, out: Outcome | None = None) -> Outcome:
        """Record that the kernel took ``branch``; return ``out`` (default: success)."""
        if branch not in BY_ID:
            raise KeyError(f"unknown branch {branch!r}: add it to harness/model/branches.py")
        self.hits.append(branch)
        return out if out is not None else Outcome.ok()

    def copy(self) -> Self:
        return copy.deepcopy(self)

    # ------------------------------------------------------------------ helpers
    def _hold(self, kind: str, group: int, device: str | None = None,
              domain: str | None = None) -> Hold | None:
        for h in self.state.holds:
            if h.kind == kind and h.group == group and (device is None or h.device == device) \
                    and (domain is None or h.domain == domain):
                return h
        return None

    def _refuse(self, handle: str, dev: str) -> Outcome | None:
        """The module's first checks of every attach and detach: a known handle and device."""
        if handle not in self.state.domains:
            return Outcome.guarded(ENOENT)
        if dev not in self.state.drivers:
            return Outcome.guarded(ENODEV)
        return None

    def _device_group(self, dev: str) -> Group | Outcome:
        """The module's op_target with a group needed: a known device that has one."""
        if dev not in self.state.drivers:
            return Outcome.guarded(ENODEV)
        g = self.state.group_of(dev)
        return Outcome.guarded(ENODEV) if g is None else g

    def _handle_group(self, handle: str, dev: str) -> Group | Outcome:
        """A known handle, then the device's group (the group operations' checks)."""
        return self._refuse(handle, dev) or self._device_group(dev)

    def _device_attachments(self, g: Group) -> list[Hold]:
        """The group's attachments made with the device API (the proposals count them)."""
        return [h for h in self.state.holds if h.kind == "attach_dev" and h.group == g.id]

    def _attached(self, kind: str, handle: str, dev: str) -> tuple[Group, Hold] | None:
        """The module detaches only what it attached and the kernel still has attached:
        iommu_detach_device WARNs otherwise (d != group->domain, or a multi-device group)."""
        g = self.state.group_of(dev)
        hold = self._hold(kind, g.id, None, handle) if g else None
        if g is None or hold is None or g.domain != handle:
            return None
        return g, hold

    def _resync(self, g: Group) -> None:
        """What the module forgets after a call with no guard (ih_attach.c: resync_group):
        attachments whose domain is no longer the group's, claims once nobody counts."""
        self.state.holds = [
            h for h in self.state.holds
            if h.group != g.id
            or (h.kind in ("attach_dev", "attach_group") and g.domain == h.domain)
            or (h.kind in ("claim_group", "claim_dev") and g.owner_cnt > 0)
            or h.kind == "pasid"]

    def _claim_device(self, g: Group, owner: str) -> Outcome:
        """drivers/iommu/iommu.c (6.12, 7.2): iommu_device_claim_dma_owner, for the module's
        claim and iommufd's bind (owner: the iommufd context) alike — a count held by another
        owner (or kernel drivers) is -EPERM; the same owner just counts up; the first claim
        (__iommu_take_dma_ownership) needs the default domain and no PASID attached."""
        if g.owner_cnt:
            if g.owner != owner:
                return self.hit("claim_dev.other_owner", Outcome(-EPERM))
            g.owner_cnt += 1
            return self.hit("claim_dev.same_owner")
        if g.domain != DEFAULT:
            return self.hit("claim_dev.off_default", Outcome(-EBUSY))
        if g.pasids:
            return self.hit("claim_dev.pasids", Outcome(-EBUSY))
        g.domain, g.owner, g.owner_cnt = BLOCKING, owner, 1
        return self.hit("claim_dev.ok")

    def _core_domain(self, g: Group) -> str:
        # drivers/iommu/iommu.c: __iommu_group_set_core_domain — owner ? blocking : default
        return BLOCKING if g.owner is not None else DEFAULT

    def _attach_group_rule(self, handle: str, g: Group) -> Outcome:
        # drivers/iommu/iommu.c: __iommu_attach_group — -EBUSY unless the group is on its
        # default or blocking domain (so re-attaching the same domain is -EBUSY too).
        if g.domain not in (DEFAULT, BLOCKING):
            return self.hit("attach.busy", Outcome(-EBUSY))
        g.domain = handle
        self.state.domains[handle] = True
        return self.hit("attach.ok")
