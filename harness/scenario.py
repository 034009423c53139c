"""Scenario files: a topology, a profile constraint and steps, run on a guest and on the model
side by side. The format is documented in the README under "Scenario files"."""

from __future__ import annotations

import errno
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError
from .model.core import OPERATION_ARGS, OPERATIONS, TYPE_REQUESTS
from .model.profiles import PROFILES
from .platforms import Platform
from .prepare import TOPOLOGIES_DIR
from .steps import (
    USER_SPACE_PREFIXES,
    Action,
    Bind,
    ByProfile,
    Checks,
    DriverChoice,
    Observe,
    Pairs,
    Step,
    Via,
)
from .topology import Topology, load_topology

_STEP_KEYS = {"op", "bind", "via", "observe", "expect", "state", "types", "events", "note"}
_TOP_KEYS = {"name", "description", "topology", "profiles", "platforms", "kconfig", "bind",
             "step"}
_KCONFIG_NAME = re.compile(r"[A-Z0-9_]+")
# Operations the harness performs from the guest's shell rather than through ih_attach.
SHELL_OPS = ("set_type",)
# Calls of the guest's VFIO user (guest_modules/tools/ih-vfio.c), not of ih_attach.
VFIO_OPS = tuple(op for op in OPERATIONS if op.startswith(USER_SPACE_PREFIXES))


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    topology: Topology
    steps: tuple[Step, ...]
    bind: tuple[tuple[str, DriverChoice], ...]
    profiles: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    description: str = ""
    topology_path: Path = TOPOLOGIES_DIR / "default.toml"
    kconfig: tuple[str, ...] = ()  # options the kernel must have (=y or =m), without CONFIG_

    def missing_config(self, config: Mapping[str, str]) -> list[str]:
        """The options of ``kconfig`` that a kernel's configuration lacks."""
        return [name for name in self.kconfig if config.get(f"CONFIG_{name}") not in ("y", "m")]


Fail = Callable[[str, str], ConfigError]


def _errno_value(value: Any, fail: Fail, where: str) -> int:
    if isinstance(value, bool):
        raise fail(f"{where}: must be an errno name or an integer", "write expect = "
                   "\"EINVAL\" or expect = 0")
    if isinstance(value, int):
        return -abs(value)
    if isinstance(value, str):
        if value in ("0", "OK", "ok"):
            return 0
        code = getattr(errno, value.lstrip("-"), None)
        if isinstance(code, int):
            return -code
    raise fail(f"{where} {value!r} is not an errno name", "use a name such as "
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
    kconfig = data.get("kconfig", [])
    for key, value in (("profiles", profiles), ("platforms", platforms), ("kconfig", kconfig)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(f"'{key}' must be a list of names", f'write {key} = ["..."]')
    bad = [name for name in kconfig if not _KCONFIG_NAME.fullmatch(name)]
    if bad:
        raise fail(f"kconfig: {bad[0]!r} is not a configuration option's name",
                   'write the option without CONFIG_, as kconfig = ["IOMMUFD"]')
    return Scenario(name=str(data.get("name", path.stem)), path=path, topology=topo,
                    steps=steps, bind=bind, profiles=tuple(profiles),
                    platforms=tuple(platforms), description=str(data.get("description", "")),
                    topology_path=topo_path, kconfig=tuple(kconfig))


def _bind_table(value: Any, ids: set[str], fail: Fail,
                where: str) -> tuple[tuple[str, DriverChoice], ...]:
    if not isinstance(value, dict):
        raise fail(f"{where} must be a table of device = driver kind",
                   'write { edu0 = "owned" }')
    kinds = [c.value for c in DriverChoice]
    for dev, kind in value.items():
        if dev not in ids:
            raise fail(f"{where}: unknown device {dev!r}", f"devices are {sorted(ids)}")
        if kind not in kinds:
            raise fail(f"{where}: unknown driver kind {kind!r} for {dev}",
                       f"use one of {sorted(kinds)}")
    return tuple(sorted((d, DriverChoice(k)) for d, k in value.items()))


# What a device's domain can be in a step's `state`, besides "@handle".
STATE_WORDS = ("default", "blocked", "unmanaged", "identity", "none")
TYPE_WORDS = (*TYPE_REQUESTS[:-1], "none")
_BDF = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


def _state_word(value: Any) -> bool:
    return isinstance(value, str) and (value in STATE_WORDS or
                                       (value.startswith("@") and len(value) > 1))


def _check_op_words(op: str, ids: set[str], fail: Fail, where: str) -> None:
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


V = TypeVar("V")


def _by_profile(value: Any, parse: Callable[[Any, str], V], empty: V, where: str,
                fail: Fail) -> ByProfile[V]:
    """A check's value, or a table of them by profile name (``{ "linux-6.1" = ... }``)."""
    if isinstance(value, dict) and value and set(value) <= set(PROFILES):
        return ByProfile(empty, tuple(sorted((k, parse(v, f"{where} ({k})"))
                                             for k, v in value.items())))
    if isinstance(value, dict) and any(k.startswith("linux-") or k.startswith("proposal-")
                                       for k in value):
        unknown = sorted(k for k in value if k not in PROFILES)
        raise fail(f"{where} names unknown profile(s) {', '.join(unknown)}",
                   f"profiles are {', '.join(PROFILES)}")
    return ByProfile(parse(value, where))


def _checks(data: dict[str, Any], ids: set[str], fail: Fail, where: str) -> Checks:
    def rc(value: Any, at: str) -> int | None:
        return None if value is None else _errno_value(value, fail, at)

    def state(value: Any, at: str) -> Pairs:
        pairs = value.items() if isinstance(value, dict) else ()
        bad = next((f"{k} = {v!r}" for k, v in pairs if k not in ids or not _state_word(v)), "")
        if not isinstance(value, dict) or bad:
            raise fail(f"{at} must map device ids to domains"
                       f"{' (not ' + bad + ')' if bad else ''}",
                       f'write state = {{ edu0 = "@d" }} (or {", ".join(map(repr, STATE_WORDS))})')
        return tuple(sorted(value.items()))

    def types(value: Any, at: str) -> Pairs:
        if not isinstance(value, dict) or not all(k in ids and v in TYPE_WORDS
                                                  for k, v in value.items()):
            raise fail(f"{at} must map device ids to a group type",
                       'write types = { edu0 = "identity" } (or "DMA", "DMA-FQ", "none")')
        return tuple(sorted(value.items()))

    def events(value: Any, at: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
            raise fail(f"{at} must be a list of event kinds or signatures",
                       'write events = ["dmar_fault"]')
        return tuple(value)

    return Checks(rc=_by_profile(data.get("expect"), rc, None, f"{where}: expect", fail),
                  state=_by_profile(data.get("state", {}), state, (), f"{where}: state", fail),
                  types=_by_profile(data.get("types", {}), types, (), f"{where}: types", fail),
                  events=_by_profile(data.get("events", []), events, (), f"{where}: events",
                                     fail))


def _action(data: dict[str, Any], ids: set[str], fail: Fail, where: str) -> Action:
    op, bind, observe = data.get("op", ""), data.get("bind"), data.get("observe", False)
    if sum(map(bool, (op, bind, observe))) != 1:
        raise fail(f"{where}: needs exactly one of 'op', 'bind' and 'observe'",
                   'write op = "attach_dev d edu0", bind = { edu0 = "dma_api" } or '
                   'observe = true')
    vias = [v.value for v in Via]
    via = data.get("via", "bind")
    if via not in vias or (via != "bind" and not bind):
        raise fail(f"{where}: 'via' must be one of {', '.join(vias)}, with 'bind'",
                   'write bind = { edu0 = "dma_api" } and via = "drivers_probe"')
    if bind:
        return Bind(_bind_table(bind, ids, fail, where), Via(via))
    if observe:
        if observe is not True:
            raise fail(f"{where}: 'observe' must be true", "write observe = true")
        return Observe()
    if not isinstance(op, str) or op.split()[0] not in OPERATIONS:
        raise fail(f"{where}: unknown operation {op!r}", f"operations are {', '.join(OPERATIONS)}")
    _check_op_words(op, ids, fail, where)
    return Step.op(op).action


def _step(data: Any, index: int, ids: set[str], fail: Fail) -> Step:
    where = f"step {index + 1}"
    if not isinstance(data, dict):
        raise fail(f"{where} is not a table", "write each step as [[step]]")
    unknown = set(data) - _STEP_KEYS
    if unknown:
        raise fail(f"{where}: unknown key(s) {', '.join(sorted(unknown))}",
                   f"step keys are {', '.join(sorted(_STEP_KEYS))}")
    return Step(_action(data, ids, fail, where), _checks(data, ids, fail, where),
                note=str(data.get("note", "")))


def topology_file(scenario: Scenario) -> Path:
    """The topology file a scenario's guest boots with."""
    return scenario.topology_path
