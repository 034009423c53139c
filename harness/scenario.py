"""Scenario files: a topology, a profile constraint and steps, run on a guest and on the model
side by side. The format is documented in the README under "Scenario files"."""

from __future__ import annotations

import errno
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .model import DMA_API, NO_DRIVER, OWNED, Model, Profile
from .model.core import OPERATION_ARGS, OPERATIONS, TYPE_REQUESTS
from .model.profiles import PROFILES
from .platforms import Platform
from .prepare import TOPOLOGIES_DIR
from .topology import Topology, device_bdf, load_topology, predict_groups

BIND_KINDS = {"owned": "ih_edu_owned", "dma_api": "ih_edu", "none": ""}
# What the model needs to know of a driver: does it manage DMA itself (driver_managed_dma)?
# drivers/pci/pcie/portdrv.c, drivers/pci/pci-stub.c, drivers/vfio/pci/vfio_pci.c set it;
# shpchp (drivers/pci/hotplug/shpchp_core.c) and ordinary drivers do not.
DRIVER_KIND = {"ih_edu_owned": OWNED, "pci-stub": OWNED, "vfio-pci": OWNED, "pcieport": OWNED}
_STEP_KEYS = {"op", "bind", "via", "expect", "state", "types", "events", "note"}
# How a bind step reaches the driver core: the driver's `bind` file (bind_store: the probe's
# error as is) or the bus's `drivers_probe` (drivers_probe_store: any failure is -EINVAL).
BIND_VIA = ("bind", "drivers_probe")
_TOP_KEYS = {"name", "description", "topology", "profiles", "platforms", "bind", "step"}


def driver_kind(name: str | None) -> str:
    if not name:
        return NO_DRIVER
    return DRIVER_KIND.get(name, DMA_API)


@dataclass(frozen=True)
class Step:
    op: str = ""  # an ih_attach operation, device ids not yet resolved
    bind: tuple[tuple[str, str], ...] = ()  # device id → owned | dma_api | none
    via: str = "bind"  # bind | drivers_probe
    expect: int | None = None  # the rc the author insists on, under any profile
    expect_by_profile: tuple[tuple[str, int], ...] = ()  # profile name → rc
    state: tuple[tuple[str, str], ...] = ()
    types: tuple[tuple[str, str], ...] = ()  # device id → the group's sysfs type
    events: tuple[str, ...] = ()
    note: str = ""

    def expected(self, profile: str) -> int | None:
        """The rc the author insists on under ``profile`` (None: no insistence)."""
        return dict(self.expect_by_profile).get(profile, self.expect)

    @property
    def label(self) -> str:
        if self.op:
            return self.op
        verb = "bind" if self.via == "bind" else "probe"
        return f"{verb} " + " ".join(f"{d}={k}" for d, k in self.bind)


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    topology: Topology
    steps: tuple[Step, ...]
    bind: tuple[tuple[str, str], ...]
    profiles: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    description: str = ""
    topology_path: Path = TOPOLOGIES_DIR / "default.toml"


def _errno_value(value: Any, fail: Any, where: str) -> int:
    if isinstance(value, bool):
        raise fail(f"{where}: expect must be an errno name or an integer", "write expect = "
                   "\"EINVAL\" or expect = 0")
    if isinstance(value, int):
        return -abs(value)
    if isinstance(value, str):
        if value in ("0", "OK", "ok"):
            return 0
        code = getattr(errno, value.lstrip("-"), None)
        if isinstance(code, int):
            return -code
    raise fail(f"{where}: expect {value!r} is not an errno name", "use a name such as "
               "\"EBUSY\", or 0")


def load_scenario(path: Path, platform: Platform) -> Scenario:
    def fail(problem: str, fix: str) -> ConfigError:
        return ConfigError(f"scenario {path}: {problem}", fix)

    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read scenario {path}: {exc.strerror}",
                          "pass an existing TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"not valid TOML: {exc}", "fix the TOML syntax") from exc
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise fail(f"unknown key(s) {', '.join(sorted(unknown))}",
                   f"top-level keys are {', '.join(sorted(_TOP_KEYS))}")
    topo_name = data.get("topology", "default")
    if not isinstance(topo_name, str):
        raise fail("'topology' must be a string", 'write topology = "default" or a file path')
    topo_path = TOPOLOGIES_DIR / f"{topo_name}.toml"
    if not topo_path.exists():
        topo_path = path.parent / topo_name
    if not topo_path.exists():
        raise fail(f"topology {topo_name!r} is neither built in nor a file next to the scenario",
                   f"use one of {sorted(p.stem for p in TOPOLOGIES_DIR.glob('*.toml'))}")
    topo = load_topology(topo_path, platform)
    ids = {d.id for d in topo.devices}
    bind = _bind_table(data.get("bind", {d: "owned" for d in sorted(ids)}), ids, fail, "bind")
    steps_data = data.get("step", [])
    if not isinstance(steps_data, list) or not steps_data:
        raise fail("no steps", "add at least one [[step]] with op = \"...\"")
    steps = tuple(_step(s, i, ids, fail) for i, s in enumerate(steps_data))
    profiles = data.get("profiles", [])
    platforms = data.get("platforms", [])
    for key, value in (("profiles", profiles), ("platforms", platforms)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(f"'{key}' must be a list of names", f'write {key} = ["..."]')
    return Scenario(name=str(data.get("name", path.stem)), path=path, topology=topo,
                    steps=steps, bind=bind, profiles=tuple(profiles),
                    platforms=tuple(platforms), description=str(data.get("description", "")),
                    topology_path=topo_path)


def _bind_table(value: Any, ids: set[str], fail: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise fail(f"{where} must be a table of device = driver kind",
                   'write { edu0 = "owned" }')
    for dev, kind in value.items():
        if dev not in ids:
            raise fail(f"{where}: unknown device {dev!r}", f"devices are {sorted(ids)}")
        if kind not in BIND_KINDS:
            raise fail(f"{where}: unknown driver kind {kind!r} for {dev}",
                       f"use one of {sorted(BIND_KINDS)}")
    return tuple(sorted(value.items()))


# What a device's domain can be in a step's `state`, besides "@handle".
STATE_WORDS = ("default", "blocked", "unmanaged", "identity", "none")
_BDF = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


def _state_word(value: Any) -> bool:
    return isinstance(value, str) and (value in STATE_WORDS or
                                       (value.startswith("@") and len(value) > 1))


def _check_op_words(op: str, ids: set[str], fail: Any, where: str) -> None:
    """An operation's argument count and its device arguments, against the model's table."""
    name, *words = op.split()
    wanted = OPERATION_ARGS[name]
    if len(words) != len(wanted):
        example = " ".join([name, *(sorted(ids)[0] if a == "dev" else a.upper() for a in wanted)])
        raise fail(f"{where}: {name} takes {len(wanted)} argument(s) "
                   f"({', '.join(wanted) or 'none'}), got {len(words)} in {op!r}",
                   f"write op = {example!r}")
    for arg, word in zip(wanted, words, strict=True):
        if arg == "dev" and word not in ids and not _BDF.match(word):
            raise fail(f"{where}: {word!r} in {op!r} is not a device of the topology",
                       f"use one of {', '.join(sorted(ids))}")


def _step(data: Any, index: int, ids: set[str], fail: Any) -> Step:
    where = f"step {index + 1}"
    if not isinstance(data, dict):
        raise fail(f"{where} is not a table", "write each step as [[step]]")
    unknown = set(data) - _STEP_KEYS
    if unknown:
        raise fail(f"{where}: unknown key(s) {', '.join(sorted(unknown))}",
                   f"step keys are {', '.join(sorted(_STEP_KEYS))}")
    op, bind = data.get("op", ""), data.get("bind")
    if bool(op) == bool(bind):
        raise fail(f"{where}: needs exactly one of 'op' and 'bind'",
                   'write op = "attach_dev d edu0" or bind = { edu0 = "dma_api" }')
    if op and (not isinstance(op, str) or op.split()[0] not in _OPS):
        raise fail(f"{where}: unknown operation {op!r}", f"operations are {', '.join(_OPS)}")
    via = data.get("via", "bind")
    if via not in BIND_VIA or (via != "bind" and not bind):
        raise fail(f"{where}: 'via' must be one of {', '.join(BIND_VIA)}, with 'bind'",
                   'write bind = { edu0 = "dma_api" } and via = "drivers_probe"')
    if op:
        _check_op_words(op, ids, fail, where)
    state = data.get("state", {})
    pairs = state.items() if isinstance(state, dict) else ()
    bad = next((f"{k} = {v!r}" for k, v in pairs if k not in ids or not _state_word(v)), "")
    if not isinstance(state, dict) or bad:
        raise fail(f"{where}: 'state' must map device ids to domains"
                   f"{' (not ' + bad + ')' if bad else ''}",
                   f'write state = {{ edu0 = "@d" }} (or {", ".join(map(repr, STATE_WORDS))})')
    types = data.get("types", {})
    if not isinstance(types, dict) or not all(k in ids and v in (*TYPE_REQUESTS[:-1], "none")
                                              for k, v in types.items()):
        raise fail(f"{where}: 'types' must map device ids to a group type",
                   'write types = { edu0 = "identity" } (or "DMA", "DMA-FQ", "none")')
    events = data.get("events", [])
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise fail(f"{where}: 'events' must be a list of event kinds or signatures",
                   'write events = ["dmar_fault"]')
    expect = data.get("expect")
    by_profile: tuple[tuple[str, int], ...] = ()
    if isinstance(expect, dict):
        unknown_profiles = set(expect) - set(PROFILES)
        if unknown_profiles:
            raise fail(f"{where}: expect names unknown profile(s) "
                       f"{', '.join(sorted(unknown_profiles))}",
                       f"profiles are {', '.join(PROFILES)}")
        by_profile = tuple(sorted((k, _errno_value(v, fail, f"{where} ({k})"))
                                  for k, v in expect.items()))
        expect = None
    return Step(op=op or "", bind=_bind_table(bind, ids, fail, where) if bind else (), via=via,
                expect=_errno_value(expect, fail, where) if expect is not None else None,
                expect_by_profile=by_profile,
                state=tuple(sorted(state.items())), types=tuple(sorted(types.items())),
                events=tuple(events), note=str(data.get("note", "")))


_OPS = OPERATIONS
# Operations the harness performs from the guest's shell rather than through ih_attach.
SHELL_OPS = ("set_type",)


def resolve(line: str, topo: Topology) -> str:
    """Device ids in an operation become the PCI addresses the guest knows."""
    bdfs = {d.id: device_bdf(topo, d) for d in topo.devices}
    return " ".join(bdfs.get(w, w) for w in line.split())


# ---------------------------------------------------------------------------------- model side

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
    return Model(profile, platform.groups_need_driver, groups, kinds, group_types, auto_type,
                 alias, births)


def model_bind(model: Model, bdf: str, kind: str, via: str = "bind") -> int:
    """Rebinding a device in the model: unbind (a DMA-API driver gives its count back), then
    bind; a DMA-API driver's probe calls iommu_device_use_default_domain
    (drivers/iommu/iommu.c), -EBUSY when the group is owned or off its default domain.
    That -EBUSY comes from dma_configure, before the driver's probe, so it stays negative
    (drivers/base/dd.c: really_probe turns only probe() errors positive): `bind` returns it
    (drivers/base/bus.c: bind_store), `drivers_probe` turns any failure into -EINVAL
    (drivers_probe_store, bus_rescan_devices_helper)."""
    state = model.state
    if kind != "none":
        model.probe(bdf)  # SMMUv3 before 7.x: the group is made at the first probe
    g = state.group_of(bdf)
    if g is not None and state.drivers.get(bdf) != NO_DRIVER:
        model.drop_pasids(g)  # ih_attach's remove detaches its PASIDs on the group
    if state.drivers.get(bdf) == DMA_API and g is not None:
        g.owner_cnt = max(0, g.owner_cnt - 1)
    state.drivers[bdf] = NO_DRIVER
    if kind == "dma_api":
        # 6.12 also refuses while PASIDs are attached (g.pasids is empty on 6.1).
        if g is not None and g.owner_cnt and (g.owner is not None or g.domain != "default"
                                              or g.pasids):
            return -errno.EBUSY if via == "bind" else -errno.EINVAL
        if g is not None:
            g.owner_cnt += 1
        state.drivers[bdf] = DMA_API
    elif kind == "owned":
        state.drivers[bdf] = OWNED
    return 0


@dataclass
class StepReport:
    index: int
    label: str
    kernel_rc: int | None
    model_rc: int
    kernel_guard: bool
    model_guard: bool
    kernel_state: dict[str, str]
    model_state: dict[str, str]
    events: list[str] = field(default_factory=list)
    kernel_types: dict[str, str] = field(default_factory=dict)
    model_types: dict[str, str] = field(default_factory=dict)
    model_warn: str = ""  # the model says the kernel WARNs here (in this function)
    model_fault: bool = False  # the model says the IOMMU reports a DMA fault here
    expected_events: list[str] = field(default_factory=list)  # splats the step expected
    problems: list[str] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)  # rc under each --also-profile model

    @property
    def ok(self) -> bool:
        return not self.problems


def topology_file(scenario: Scenario) -> Path:
    """The topology file a scenario's guest boots with."""
    return scenario.topology_path


def format_scenario(doc: Mapping[str, Any], extra: Sequence[str] = ()) -> str:
    """One row per step: operation, kernel result, model result, agreement, kernel events."""
    title = (f"== {doc['scenario']} ({doc['platform']}, {doc['kernel']}, model "
             f"{doc['profile']})")
    if doc.get("skipped"):
        return f"{title}: skipped, {doc['skipped']}"
    if doc.get("died"):
        where = doc.get("console_log", "its console log")
        return f"{title}\n   FAILED: {doc['died']} (see {where})"
    cols = "".join(f" {p[:16]:<17}" for p in extra)
    lines = [title, f"{'#':>3} {'operation':<44} {'kernel':<10} {'model':<10}{cols} verdict"]
    for s in doc["steps"]:
        k = errno_text(s["kernel_rc"]) + ("*" if s["kernel_guard"] else "")
        m = errno_text(s["model_rc"]) + ("*" if s["model_guard"] else "") + \
            ("!" if s.get("model_warn") else "") + ("^" if s.get("model_fault") else "")
        others = "".join(f" {errno_text(rc):<17}" for rc in s["extra"])
        verdict = "ok" if not s["problems"] else "DIFF: " + "; ".join(s["problems"])
        ev = f"  [{', '.join(s['events'])}]" if s["events"] else ""
        lines.append(f"{s['index']:>3} {s['label'][:44]:<44} {k:<10} {m:<10}{others} "
                     f"{verdict}{ev}")
    lines.append("   agree" if doc["ok"] else "   DISAGREE")
    return "\n".join(lines)


def errno_text(rc: int | None) -> str:
    if rc is None:
        return "-"
    return "0" if rc == 0 else errno.errorcode.get(-rc, str(rc))


def bind_errno(stderr: str) -> int:
    """The errno behind a failed sysfs write, from the shell's strerror text."""
    for code, _name in errno.errorcode.items():
        if os.strerror(code).lower() in stderr.lower():
            return -code
    return -errno.EIO
