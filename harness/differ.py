"""Running steps on a guest and on the model side by side (the I/O half of scenarios and of
the differential fuzzer)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .attach import AttachCtl, batch_script, parse_results
from .cache import digest
from .dmesg import classify, parse_records
from .guest import Guest
from .kernel import KernelArtifact
from .model import Model, Profile
from .model.build import build_model
from .model.profiles import ProfileChoice, choose_profile
from .modules import parse_symvers
from .results import Side, StepResult
from .scenario import Scenario
from .steps import DRIVER_NAMES, DriverChoice, ModelView, Observation, Step, bind_script
from .sysfs import GROUPS_SCRIPT, IommuGroup, parse_groups
from .topology import Topology, device_bdf
from .verdict import FAULT_WINDOW, judge_step


def kernel_profile(kernel: KernelArtifact) -> ProfileChoice:
    """The model profile of a kernel: its release and exported symbols; for a release no
    profile was written for, the nearest one, assumed (the choice's note says so)."""
    exported: frozenset[str] = frozenset()
    if kernel.kbuild_dir is not None and (kernel.kbuild_dir / "Module.symvers").is_file():
        exported = parse_symvers((kernel.kbuild_dir / "Module.symvers").read_text())
    return choose_profile(kernel.release, exported)


def guest_profile(guest: Guest) -> Profile:
    """The model profile of the guest's kernel (see :func:`kernel_profile`)."""
    return kernel_profile(guest.config.kernel).profile


def types_script(bdfs: Sequence[str]) -> str:
    """One line per device: its group's sysfs type, or "none" without a group."""
    return (f"for d in {' '.join(bdfs)}; do cat /sys/bus/pci/devices/$d/iommu_group/type "
            "2>/dev/null || echo none; done")


def setup_binds(scenario: Scenario, bdfs: Mapping[str, str]) -> list[tuple[str, DriverChoice]]:
    """The devices a scenario binds before its steps, as (device id, driver), in address order
    (binding order decides SMMUv3 groups)."""
    wanted = dict(scenario.bind)
    return [(i, wanted[i]) for i in sorted(bdfs, key=lambda i: bdfs[i])
            if wanted.get(i, DriverChoice.NONE) is not DriverChoice.NONE]


def setup_script(binds: Sequence[tuple[str, DriverChoice]]) -> str:
    """Bind each device (bdf, driver) in order unless it is bound to that driver already (a
    guest restored from a state saved set up); one word per device: "already", "bound" or
    "failed"."""
    lines = []
    for bdf, kind in binds:
        link = f"/sys/bus/pci/devices/{bdf}/driver"
        already = f'[ "$(basename "$(readlink {link})")" = {DRIVER_NAMES[kind]} ]'
        lines.append(f"if {already} 2>/dev/null; then echo already; "
                     f"elif {{ {bind_script(bdf, kind)}; }} >/dev/null 2>&1; "
                     "then echo bound; else echo failed; fi")
    return "; ".join(lines or [":"])


@dataclass(frozen=True)
class SetupFacts:
    """What a pristine guest shows after a scenario's set-up: what the model is built from.
    ``noop``: the set-up found every device bound already (a state saved set up)."""
    drivers: Mapping[str, str | None]
    bound: tuple[str, ...]
    types: Mapping[str, str]
    auto_type: str
    noop: bool

    def to_json(self) -> dict[str, object]:
        return {"drivers": dict(self.drivers), "bound": list(self.bound),
                "types": dict(self.types), "auto_type": self.auto_type, "noop": self.noop}

    @staticmethod
    def from_json(doc: Mapping[str, Any]) -> SetupFacts:
        return SetupFacts(drivers=dict(doc["drivers"]), bound=tuple(doc["bound"]),
                          types=dict(doc["types"]), auto_type=str(doc["auto_type"]),
                          noop=bool(doc["noop"]))


def set_up(scenario: Scenario) -> str:
    """A command that binds the devices as ``scenario`` says: what a guest that will run many
    sequences of one set-up (the fuzzer's) is saved after (GuestConfig.ready)."""
    bdfs = {d.id: device_bdf(scenario.topology, d) for d in scenario.topology.devices}
    return setup_script([(bdfs[i], k) for i, k in setup_binds(scenario, bdfs)])


def parse_setup(text: str) -> list[bool]:
    """Which binds of :func:`setup_script` hold (done now, or found done)."""
    return [word in ("already", "bound") for word in text.split()]


def auto_type(groups: Sequence[IommuGroup], devices: Sequence[str]) -> str:
    """The kernel's default domain type (iommu_def_domain_type, which "auto" asks for), as the
    groups of the machine's own devices show it: nobody writes their types."""
    untouched = [g.type for g in groups if not g.bdfs & set(devices)]
    # A tie goes to the first name in sorted order, so the answer never depends on hashing.
    return max(sorted(set(untouched)), key=untouched.count) if untouched else "DMA"


@dataclass
class Differ:
    guest: Guest
    topology: Topology
    profile: Profile
    extra: Sequence[Profile] = ()
    model: Model | None = None
    extra_models: list[Model] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ctl = AttachCtl(self.guest)
        self.bdfs = {d.id: device_bdf(self.topology, d) for d in self.topology.devices}
        self._types: dict[str, str] = {}
        self.auto_type = ""

    def setup(self, scenario: Scenario) -> None:
        """Bind the devices as the scenario says and build the model(s) from what the guest
        then shows. The guest must be pristine (just booted, or restored from its saved
        state, with ih_attach loaded): nothing an earlier scenario did is undone here.

        A guest restored from a state saved set up (every device already bound as the
        scenario says) needs nothing done, and shows what every restore of that state shows:
        what the first one read is kept beside the state and used again (the reads cost
        more than half a second on a freshly restored TCG guest)."""
        binds = setup_binds(scenario, self.bdfs)
        script = setup_script([(self.bdfs[i], kind) for i, kind in binds])
        saved = self.guest.restored_from
        name = digest([script, *sorted(self.bdfs.values())])
        kept = saved.facts(name) if saved is not None else None
        facts = SetupFacts.from_json(kept) if kept is not None else self._observe(binds, script)
        if saved is not None and kept is None and facts.noop:
            saved.keep_facts(name, facts.to_json())
        self.auto_type, self._types = facts.auto_type, dict(facts.types)
        self.platform = self.guest.config.platform
        self.model, *self.extra_models = [
            build_model(scenario, self.platform, p, dict(facts.drivers), list(facts.bound),
                        self._types, self.auto_type) for p in (self.profile, *self.extra)]

    def _observe(self, binds: Sequence[tuple[str, DriverChoice]], script: str) -> SetupFacts:
        """Run the set-up on the guest and read what it then shows (one round trip, and one
        per device without a group)."""
        self.ctl.load()
        out = self.guest.check(f"{script}; echo @@groups; {GROUPS_SCRIPT}")
        outcomes, _, listing = out.partition("@@groups\n")
        words = outcomes.split()
        bound = [i for (i, _), ok in zip(binds, parse_setup(outcomes), strict=True) if ok]
        groups = parse_groups(listing)
        drivers: dict[str, str | None] = {m.bdf: m.driver for g in groups for m in g.members}
        for bdf in sorted(self.bdfs.values()):
            drivers.setdefault(bdf, self.ctl.state(bdf).driver)
        return SetupFacts(drivers=drivers, bound=tuple(bound),
                          types={m.bdf: g.type for g in groups for m in g.members},
                          auto_type=auto_type(groups, list(self.bdfs.values())),
                          noop=all(w == "already" for w in words))

    def _reads_script(self) -> str:
        """Each device's domain (ih_attach state) and group type, for _parse_reads."""
        bdfs = list(self.bdfs.values())
        return (batch_script([f"state {b}" for b in bdfs]) + "; echo @@types; "
                + types_script(bdfs))

    def _parse_reads(self, text: str) -> tuple[dict[str, str], dict[str, str]]:
        states, _, types = text.partition("@@types\n")
        return ({i: r.get("domain") or "?"
                 for i, r in zip(self.bdfs, parse_results(states), strict=True)},
                dict(zip(self.bdfs, types.split(), strict=True)))

    def model_states(self, model: Model) -> dict[str, str]:
        return {ident: model.domain_of(bdf) for ident, bdf in self.bdfs.items()}

    def step(self, index: int, step: Step) -> StepResult:
        """Run one step on the guest and on the model(s), and judge it."""
        assert self.model is not None, "call setup() first"
        action = step.action
        # One round trip: the log mark, the action, the state and type reads, the log.
        out = self.guest.check("m=$(ih-kmsg -n); m=${m%% *}; " + action.script(self.bdfs)
                               + "; echo @@state; " + self._reads_script()
                               + "; echo @@kmsg; ih-kmsg $m")
        head, _, rest = out.partition("@@state\n")
        reads, _, log = rest.partition("@@kmsg\n")
        rc, guard = action.answer(head)
        states, types = self._parse_reads(reads)
        seen = Observation(rc, guard, tuple(states.items()), tuple(types.items()),
                           tuple(classify(parse_records(log))))
        taken = len(self.model.hits)
        predicted = action.on_model(self.model, self.bdfs)
        branches = tuple(self.model.hits[taken:])
        also = tuple(action.on_model(m, self.bdfs).rc for m in self.extra_models)
        view = ModelView(predicted, tuple(self.model_states(self.model).items()),
                         tuple((i, self.model.type_of(b)) for i, b in self.bdfs.items()), also)
        now = time.monotonic()
        recent = [t for t in self.guest.fault_times if now - t < FAULT_WINDOW]
        verdict = judge_step(step, self.profile.name, seen, view, len(recent))
        self.guest.fault_times[:] = recent + ([now] if verdict.faulted else [])
        return StepResult(
            index=index, label=step.label, kind=action.kind, note=step.note,
            kernel=Side(rc, guard, states, types),
            model=Side(predicted.rc, predicted.guard, dict(view.states), dict(view.types)),
            model_warn=predicted.warn, model_fault=predicted.fault, also=also,
            events=tuple(e.signature for e in seen.events if e.kind != "iommu_group_add"),
            expected_events=verdict.expected_events, problems=verdict.problems,
            branches=branches)
