"""Declared test devices → QEMU ``-device`` arguments and the IOMMU groups the guest should form.

Pure: parsing works on text, prediction on values. The file format (TOML) is documented in the
README under "Topology files".
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .platforms import Platform

EDU_PCI_ID = "1234:11e8"  # QEMU hw/misc/edu.c: PCI_VENDOR_ID_QEMU 0x1234, device 0x11e8
PCIE_PCI_BRIDGE_PCI_ID = "1b36:000e"  # QEMU include/hw/pci/pci.h: PCI_DEVICE_ID_REDHAT_PCIE_BRIDGE

_ID_RE = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
# QEMU hw/net/igb_regs.h: E1000_DEV_ID_82576 0x10c9, SR-IOV capable (QEMU 8.0 and later); its
# VFs sit at the PF's routing ID + 0x80 (IGB_VF_OFFSET), stride 2.
IGB_PCI_ID = "8086:10c9"
_DEVICE_KINDS = {"edu": EDU_PCI_ID, "igb": IGB_PCI_ID}
_BRIDGE_KINDS = {"pcie-pci-bridge": PCIE_PCI_BRIDGE_PCI_ID}
_DEVICE_KEYS = {"id", "kind", "slot", "function", "bridge", "dma_mask"}
_BRIDGE_KEYS = {"id", "kind", "slot"}
_TOP_KEYS = {"name", "description", "bridge", "device"}


@dataclass(frozen=True)
class Bridge:
    id: str
    slot: int
    kind: str = "pcie-pci-bridge"


@dataclass(frozen=True)
class Device:
    id: str
    slot: int
    function: int = 0
    bridge: str | None = None
    kind: str = "edu"
    dma_mask: int | None = None


@dataclass(frozen=True)
class Topology:
    name: str
    bridges: tuple[Bridge, ...]
    devices: tuple[Device, ...]
    description: str = ""

    def bridge(self, bridge_id: str) -> Bridge:
        return next(b for b in self.bridges if b.id == bridge_id)


@dataclass(frozen=True)
class PredictedDevice:
    bdf: str
    pci_id: str
    name: str


@dataclass(frozen=True)
class PredictedGroup:
    members: tuple[PredictedDevice, ...]
    type: str

    @property
    def bdfs(self) -> frozenset[str]:
        return frozenset(m.bdf for m in self.members)


# ---------------------------------------------------------------------------------- parsing

def load_topology(path: Path, platform: Platform) -> Topology:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read topology file {path}: {exc.strerror}",
                          "pass an existing TOML file to --topology") from exc
    return parse_topology(text, platform, source=str(path), default_name=path.stem)


def parse_topology(text: str, platform: Platform, *, source: str = "<topology>",
                   default_name: str = "topology") -> Topology:
    def fail(problem: str, fix: str) -> ConfigError:
        return ConfigError(f"topology {source}: {problem}", fix)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"not valid TOML: {exc}", "fix the TOML syntax") from exc
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise fail(f"unknown key(s) {', '.join(sorted(unknown))}",
                   f"top-level keys are {', '.join(sorted(_TOP_KEYS))}")
    name = _get(data, "name", str, default_name, fail, "topology")
    description = _get(data, "description", str, "", fail, "topology")
    bridges = tuple(_parse_bridge(t, i, fail) for i, t in enumerate(_tables(data, "bridge", fail)))
    devices = tuple(_parse_device(t, i, fail) for i, t in enumerate(_tables(data, "device", fail)))
    topo = Topology(name=name, bridges=bridges, devices=devices, description=description)
    _validate(topo, platform, fail)
    return topo


def _tables(data: Mapping[str, Any], key: str, fail: Any) -> list[Mapping[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise fail(f"'{key}' must be an array of tables", f"write each entry as [[{key}]]")
    return value


def _get(table: Mapping[str, Any], key: str, typ: type, default: Any, fail: Any,
         where: str) -> Any:
    if key not in table:
        if default is _REQUIRED:
            raise fail(f"{where}: missing '{key}'", f"add {key} = ... to it")
        return default
    value = table[key]
    if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise fail(f"{where}: '{key}' must be an integer, not {value!r}", f"write {key} = 3")
    if typ is str and not isinstance(value, str):
        raise fail(f"{where}: '{key}' must be a string, not {value!r}", f'write {key} = "..."')
    return value


_REQUIRED = object()


def _identify(t: Mapping[str, Any], index: int, table: str, allowed: set[str],
              kinds: Mapping[str, str], default_kind: str, fail: Any) -> tuple[str, str, str]:
    """Common to bridges and devices: known keys only, an id, a known kind.
    Returns (id, kind, where) with ``where`` naming the entry for later messages."""
    where = f"{table} #{index + 1}"
    unknown = set(t) - allowed
    if unknown:
        raise fail(f"{where}: unknown key(s) {', '.join(sorted(unknown))}",
                   f"{table} keys are {', '.join(sorted(allowed))}")
    ident = _get(t, "id", str, _REQUIRED, fail, where)
    where = f"{table} {ident!r}"
    kind = _get(t, "kind", str, default_kind, fail, where)
    if kind not in kinds:
        raise fail(f"{where}: unknown kind {kind!r}", f"use one of {sorted(kinds)}")
    return ident, kind, where


def _parse_bridge(t: Mapping[str, Any], index: int, fail: Any) -> Bridge:
    ident, kind, where = _identify(t, index, "bridge", _BRIDGE_KEYS, _BRIDGE_KINDS,
                                   "pcie-pci-bridge", fail)
    return Bridge(id=ident, slot=_get(t, "slot", int, _REQUIRED, fail, where), kind=kind)


def _parse_device(t: Mapping[str, Any], index: int, fail: Any) -> Device:
    ident, kind, where = _identify(t, index, "device", _DEVICE_KEYS, _DEVICE_KINDS, "edu", fail)
    dma_mask = _get(t, "dma_mask", int, None, fail, where)
    if dma_mask is not None and kind != "edu":
        raise fail(f"{where}: dma_mask is a property of edu, not of {kind}",
                   "remove dma_mask from this device")
    if dma_mask is not None and not 0 < dma_mask < 1 << 64:
        raise fail(f"{where}: dma_mask {dma_mask:#x} out of range", "use a positive 64-bit mask")
    return Device(id=ident, slot=_get(t, "slot", int, _REQUIRED, fail, where),
                  function=_get(t, "function", int, 0, fail, where),
                  bridge=_get(t, "bridge", str, None, fail, where), kind=kind, dma_mask=dma_mask)


def _validate(topo: Topology, platform: Platform, fail: Any) -> None:
    seen_ids: set[str] = set()
    for ident in [b.id for b in topo.bridges] + [d.id for d in topo.devices]:
        if not _ID_RE.match(ident):
            raise fail(f"id {ident!r} is not a valid name",
                       "use lower-case letters, digits, '-' and '_', starting with a letter")
        if ident in seen_ids:
            raise fail(f"id {ident!r} is used twice", "give every bridge and device its own id")
        seen_ids.add(ident)
    lo, hi = platform.user_slots
    reserved = {d.slot: d.qemu_driver for d in platform.infra}
    root_addrs: dict[tuple[int, int], str] = {}
    for b in topo.bridges:
        _check_root_slot(b.id, b.slot, lo, hi, reserved, fail)
        if (b.slot, 0) in root_addrs:
            raise fail(f"bridge {b.id!r}: slot {b.slot:#x} is taken by {root_addrs[b.slot, 0]!r}",
                       "give each root-bus slot to one bridge or one multifunction device")
        root_addrs[b.slot, 0] = b.id
    bridge_ids = {b.id for b in topo.bridges}
    bridge_slots = {b.slot for b in topo.bridges}
    behind: dict[tuple[str, int], str] = {}
    for d in topo.devices:
        where = f"device {d.id!r}"
        if not 0 <= d.function <= 7:
            raise fail(f"{where}: function {d.function} out of range", "use a function in 0–7")
        if d.bridge is not None:
            if d.bridge not in bridge_ids:
                raise fail(f"{where}: unknown bridge {d.bridge!r}",
                           f"declare it as [[bridge]] id = {d.bridge!r}, or use one of "
                           f"{sorted(bridge_ids) or 'none declared'}")
            if d.function != 0:
                raise fail(f"{where}: functions behind a bridge are not supported",
                           "put multifunction devices on the root bus")
            if not 1 <= d.slot <= 31:
                raise fail(f"{where}: slot {d.slot:#x} out of range behind a bridge",
                           "use a slot in 0x01–0x1f")
            if (d.bridge, d.slot) in behind:
                raise fail(f"{where}: slot {d.slot:#x} behind {d.bridge!r} is taken by "
                           f"{behind[d.bridge, d.slot]!r}", "use a free slot")
            behind[d.bridge, d.slot] = d.id
            continue
        _check_root_slot(d.id, d.slot, lo, hi, reserved, fail)
        if d.slot in bridge_slots:
            raise fail(f"{where}: slot {d.slot:#x} is taken by a bridge", "use a free slot")
        if (d.slot, d.function) in root_addrs:
            raise fail(f"{where}: address {d.slot:#x}.{d.function} is taken by "
                       f"{root_addrs[d.slot, d.function]!r}", "use a free slot or function")
        root_addrs[d.slot, d.function] = d.id
    _check_vf_slots(topo, root_addrs, lo, hi, fail)
    for (slot, function), ident in root_addrs.items():
        if function and (slot, 0) not in root_addrs:
            raise fail(f"device {ident!r}: function {function} of slot {slot:#x} has no function 0",
                       "a multifunction slot needs a device at function 0")


IGB_VF_SLOTS = (16, 17)  # igb's 8 VFs: routing ID + 0x80 + 2 i, i.e. these slots further on


def _check_vf_slots(topo: Topology, root_addrs: Mapping[tuple[int, int], str], lo: int,
                    hi: int, fail: Any) -> None:
    """An igb sits on the root bus at function 0 (SR-IOV needs PCIe), and the slots its VFs
    would take are free."""
    taken = {slot for slot, _ in root_addrs}
    for d in topo.devices:
        if d.kind != "igb":
            continue
        if d.bridge is not None or d.function != 0:
            raise fail(f"device {d.id!r}: igb goes on the root bus at function 0",
                       "remove its bridge and function keys")
        for vf_slot in (d.slot + k for k in IGB_VF_SLOTS):
            if vf_slot in taken or not lo <= vf_slot <= hi:
                raise fail(f"device {d.id!r}: its VFs need root-bus slot {vf_slot:#x}, which "
                           f"is {'taken' if vf_slot in taken else 'not free'}",
                           f"put the igb at a slot from {lo:#x} to {hi - IGB_VF_SLOTS[1]:#x} "
                           "whose slots 16 and 17 further on are free")


def _check_root_slot(ident: str, slot: int, lo: int, hi: int, reserved: Mapping[int, str],
                     fail: Any) -> None:
    if slot in reserved:
        raise fail(f"{ident!r}: slot {slot:#x} is used by the harness's {reserved[slot]}",
                   f"pick a slot in {lo:#04x}–{hi:#04x}")
    if not lo <= slot <= hi:
        raise fail(f"{ident!r}: root-bus slot {slot:#x} out of range",
                   f"pick a slot in {lo:#04x}–{hi:#04x}")


# ---------------------------------------------------------------------------------- QEMU side

def _is_multifunction_slot(topo: Topology, slot: int) -> bool:
    return any(d.bridge is None and d.slot == slot and d.function for d in topo.devices)


def device_args(topo: Topology, platform: Platform) -> tuple[str, ...]:
    """``-device`` arguments for the topology, bridges first so devices can name them as bus."""
    args: list[str] = []
    for b in sorted(topo.bridges, key=lambda b: b.slot):
        args += ["-device", f"{b.kind},id={b.id},bus={platform.root_bus},addr={b.slot:#x}"]
    for d in sorted(topo.devices, key=_device_sort_key(topo)):
        props = [d.kind, f"id={d.id}"]
        if d.bridge is None:
            props += [f"bus={platform.root_bus}", f"addr={d.slot:#x}.{d.function:#x}"]
            if d.function == 0 and _is_multifunction_slot(topo, d.slot):
                props.append("multifunction=on")
        else:
            props += [f"bus={d.bridge}", f"addr={d.slot:#x}"]
        if d.dma_mask is not None:
            props.append(f"dma_mask={d.dma_mask:#x}")
        args += ["-device", ",".join(props)]
    return tuple(args)


def _device_sort_key(topo: Topology) -> Any:
    slots = {b.id: b.slot for b in topo.bridges}

    def key(d: Device) -> tuple[int, int, int]:
        if d.bridge is None:
            return (d.slot, 0, d.function)
        return (slots[d.bridge], 1 + d.slot, 0)

    return key


# ---------------------------------------------------------------------------------- prediction

def _present_devices(topo: Topology, platform: Platform, bound: Sequence[str],
                     at_probe: bool) -> set[str]:
    """Topology devices that should be in a group: every device (added in address order), or
    with ``at_probe`` those bound, in the order they were; of the devices behind one bridge,
    only the first where the platform takes the alias once."""
    if at_probe:
        order = list(bound)
    else:
        order = [d.id for d in sorted(topo.devices, key=lambda d: device_bdf(topo, d))]
    if not platform.alias_taken_once:
        return set(order)
    present: set[str] = set()
    bridges_taken: set[str] = set()
    by_id = {d.id: d for d in topo.devices}
    for ident in order:
        d = by_id[ident]
        if d.bridge is not None:
            if d.bridge in bridges_taken:
                continue
            bridges_taken.add(d.bridge)
        present.add(ident)
    return present


def bridge_buses(topo: Topology) -> dict[str, int]:
    """Secondary bus number of each bridge: Linux (and the firmware before it) number buses
    depth-first in slot order of the root bus (drivers/pci/probe.c: pci_scan_child_bus_extend)."""
    return {b.id: n for n, b in enumerate(sorted(topo.bridges, key=lambda b: b.slot), start=1)}


def device_bdf(topo: Topology, d: Device) -> str:
    if d.bridge is None:
        return f"0000:00:{d.slot:02x}.{d.function}"
    return f"0000:{bridge_buses(topo)[d.bridge]:02x}:{d.slot:02x}.0"


def predict_groups(topo: Topology, platform: Platform, bound: Sequence[str] = (),
                   groups_at_probe: bool | None = None) -> tuple[PredictedGroup, ...]:
    """The IOMMU groups the guest should form, sorted by their first member's address.

    ``bound`` names the topology devices bound to a driver, in the order they were bound.

    Rules (drivers/iommu/iommu.c: pci_device_group): a conventional PCI bus behind a
    PCIe-to-PCI bridge aliases every device to the bridge, so the bridge and all devices behind
    it form one group; functions of one multifunction slot without ACS share a group
    (get_pci_function_alias_group); any other endpoint on the root bus is its own group.

    Where groups need a driver (SMMUv3 before 7.x; ``groups_at_probe``, by default the
    platform's ``groups_need_driver``), a device joins its group only when a driver probes it,
    and the bridges (bound at boot by the PCIe port driver) always have theirs; from 7.x
    (iommu_init_device runs the bus's dma_configure at device add) every device gets its group
    at boot there too. On SMMUv3 the devices behind one bridge also share one stream ID (the
    bridge's alias requester ID), which arm_smmu_insert_master refuses to insert twice ("stream
    N already in tree" in Debian 6.1 and 6.12, "Aliasing StreamID ... unsupported" in 7.2):
    only the first device bound (or added) behind a bridge gets into the group; the others get
    none.
    """
    at_probe = platform.groups_need_driver if groups_at_probe is None else groups_at_probe
    present = _present_devices(topo, platform, bound, at_probe)
    typ = platform.default_domain_type
    groups: list[PredictedGroup] = [
        PredictedGroup(tuple(PredictedDevice(bdf, pci_id, "") for bdf, pci_id in fg.members), typ)
        for fg in (*platform.fixed_groups,
                   *(platform.driverless_groups if not at_probe else ()))
    ]
    for infra in platform.infra:
        groups.append(PredictedGroup(
            (PredictedDevice(f"0000:00:{infra.slot:02x}.0", infra.pci_id, infra.qemu_id),), typ))
    buses = bridge_buses(topo)
    for b in topo.bridges:
        members = [PredictedDevice(f"0000:00:{b.slot:02x}.0", _BRIDGE_KINDS[b.kind], b.id)]
        members += [PredictedDevice(f"0000:{buses[b.id]:02x}:{d.slot:02x}.0",
                                    _DEVICE_KINDS[d.kind], d.id)
                    for d in topo.devices if d.bridge == b.id and d.id in present]
        groups.append(PredictedGroup(tuple(sorted(members, key=lambda m: m.bdf)), typ))
    by_slot: dict[int, list[PredictedDevice]] = {}
    for d in topo.devices:
        if d.bridge is None and d.id in present:
            by_slot.setdefault(d.slot, []).append(
                PredictedDevice(device_bdf(topo, d), _DEVICE_KINDS[d.kind], d.id))
    for members in by_slot.values():
        groups.append(PredictedGroup(tuple(sorted(members, key=lambda m: m.bdf)), typ))
    return tuple(sorted(groups, key=lambda g: g.members[0].bdf))
