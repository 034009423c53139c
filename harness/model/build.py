"""A model for a scenario's guest: groups from the topology's prediction, drivers as the guest
has them; and binding a driver in the model (pure)."""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..platforms import Platform
from ..topology import device_bdf, predict_groups
from .core import DMA_API, NO_DRIVER, OWNED, Model, Profile

if TYPE_CHECKING:
    from ..scenario import Scenario

# What the model needs to know of a driver the guest has: does it manage DMA itself
# (driver_managed_dma)? drivers/pci/pcie/portdrv.c, drivers/pci/pci-stub.c and
# drivers/vfio/pci/vfio_pci.c set it; shpchp (drivers/pci/hotplug/shpchp_core.c) and ordinary
# drivers do not.
OWNING_DRIVERS = frozenset({"ih_edu_owned", "pci-stub", "vfio-pci", "pcieport"})
VFIO_DRIVER = "vfio-pci"


def driver_kind(name: str | None) -> str:
    """The model's driver kind (OWNED, DMA_API, NO_DRIVER) of a driver the guest shows."""
    if not name:
        return NO_DRIVER
    return OWNED if name in OWNING_DRIVERS else DMA_API


def groups_at_probe(platform: Platform, profile: Profile) -> bool:
    """Whether a device gets its IOMMU group only when a driver probes it: a platform's
    property (SMMUv3) that a kernel can drop (7.x adds the group at device add)."""
    return platform.groups_need_driver and profile.smmu_groups_need_driver


def build_model(scenario: Scenario, platform: Platform, profile: Profile,
                drivers: Mapping[str, str | None], bound: Sequence[str],
                types: Mapping[str, str] | None = None, auto_type: str = "DMA") -> Model:
    """A model whose groups are the topology's prediction for the devices bound (in order)
    and whose drivers are those the guest really has (so the bridge's port driver counts).
    ``types`` maps a device to its group's sysfs type as the guest shows it."""
    topo = scenario.topology
    at_probe = groups_at_probe(platform, profile)
    predicted = predict_groups(topo, platform, bound, at_probe)
    groups = {i: [m.bdf for m in g.members] for i, g in enumerate(predicted)}
    kinds = {bdf: driver_kind(name) for bdf, name in drivers.items()}
    found = types or {}
    group_types = {i: next((found[m] for m in members if m in found), auto_type)
                   for i, members in groups.items()}
    bridges = {b.id: f"0000:00:{b.slot:02x}.0" for b in topo.bridges}
    alias = {device_bdf(topo, d): bridges[d.bridge] for d in topo.devices if d.bridge}
    births = {device_bdf(topo, d): f"alias:{bridges[d.bridge]}" if d.bridge
              else f"slot:{d.slot}" for d in topo.devices} if at_probe else {}
    model = Model(profile, platform.groups_need_driver, groups, kinds, group_types, auto_type,
                  alias, births)
    model.state.vfio.bound = {bdf for bdf, name in drivers.items() if name == VFIO_DRIVER}
    return model


def model_bind(model: Model, bdf: str, kind: str, via: str = "bind") -> int:
    """Rebinding a device in the model: unbind (a DMA-API driver gives its count back), then
    bind (``kind``: owned, vfio, dma_api or none; vfio-pci is an owning driver that also
    gives the group its /dev/vfio/N); a DMA-API driver's probe calls
    iommu_device_use_default_domain (drivers/iommu/iommu.c), -EBUSY when the group is owned or
    off its default domain. That -EBUSY comes from dma_configure, before the driver's probe,
    so it stays negative (drivers/base/dd.c: really_probe turns only probe() errors positive):
    `bind` returns it (drivers/base/bus.c: bind_store), `drivers_probe` turns any failure into
    -EINVAL (drivers_probe_store, bus_rescan_devices_helper)."""
    state = model.state
    if kind != "none":
        model.probe(bdf)  # SMMUv3 before 7.x: the group is made at the first probe
    g = state.group_of(bdf)
    if g is not None and state.drivers.get(bdf) != NO_DRIVER:
        model.drop_pasids(g)  # ih_attach's remove detaches its PASIDs on the group
    if state.drivers.get(bdf) == DMA_API and g is not None:
        g.owner_cnt = max(0, g.owner_cnt - 1)
    state.drivers[bdf] = NO_DRIVER
    state.vfio.bound.discard(bdf)
    if kind == "dma_api":
        # 6.12 also refuses while PASIDs are attached (g.pasids is empty on 6.1).
        if g is not None and g.owner_cnt and (g.owner is not None or g.domain != "default"
                                              or g.pasids):
            model.hit("bind.refused")
            return -errno.EBUSY if via == "bind" else -errno.EINVAL
        if g is not None:
            g.owner_cnt += 1
            model.hit("bind.counts")
        state.drivers[bdf] = DMA_API
    elif kind in ("owned", "vfio"):
        state.drivers[bdf] = OWNED
        if kind == "vfio":
            state.vfio.bound.add(bdf)
    return 0
