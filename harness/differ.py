"""Running steps on a guest and on the model side by side (the I/O half of scenarios and of
the differential fuzzer)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .attach import AttachCtl, batch_script, parse_results
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
    guest restored from a state saved set up); one line per device, "bound" or "failed"."""
    lines = []
    for bdf, kind in binds:
        link = f"/sys/bus/pci/devices/{bdf}/driver"
        already = f'[ "$(basename "$(readlink {link})")" = {DRIVER_NAMES[kind]} ]'
        lines.append(f"if {{ {already} || {{ {bind_script(bdf, kind)}; }}; }} >/dev/null 2>&1; "
                     "then echo bound; else echo failed; fi")
    return "; ".join(lines or [":"])


def set_up(scenario: Scenario) -> str:
    """A command that binds the devices as ``scenario`` says: what a guest that will run many
    sequences of one set-up (the fuzzer's) is saved after (GuestConfig.ready)."""
    bdfs = {d.id: device_bdf(scenario.topology, d) for d in scenario.topology.devices}
    return setup_script([(bdfs[i], k) for i, k in setup_binds(scenario, bdfs)])


def parse_setup(text: str) -> list[bool]:
    """Which binds of :func:`setup_script` succeeded."""
    return [word == "bound" for word in text.split()]


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
        state, with ih_attach loaded): nothing an earlier scenario did is undone here."""
        self.ctl.load()
        order = sorted(self.topology.devices, key=lambda d: self.bdfs[d.id])
        binds = setup_binds(scenario, self.bdfs)
        # One round trip.
        out = self.guest.check(setup_script([(self.bdfs[i], kind) for i, kind in binds])
                               + f"; echo @@groups; {GROUPS_SCRIPT}")
        outcomes, _, listing = out.partition("@@groups\n")
        bound = [i for (i, _), ok in zip(binds, parse_setup(outcomes), strict=True) if ok]
        groups = parse_groups(listing)
        self.auto_type = auto_type(groups, list(self.bdfs.values()))
        drivers: dict[str, str | None] = {m.bdf: m.driver for g in groups for m in g.members}
        self._types = {m.bdf: g.type for g in groups for m in g.members}
        for d in order:
            drivers.setdefault(self.bdfs[d.id], self.ctl.state(self.bdfs[d.id]).driver)
        self.platform = self.guest.config.platform
        self.model, *self.extra_models = [
            build_model(scenario, self.platform, p, drivers, bound, self._types,
                        self.auto_type) for p in (self.profile, *self.extra)]

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
