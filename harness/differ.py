"""Running steps on a guest and on the model side by side (the I/O half of scenarios and of
the differential fuzzer)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from .attach import AttachCtl, batch_script, parse_results
from .dmesg import Event, classify, parse_records
from .guest import Guest
from .model import Model, Profile, profile_for
from .modules import parse_symvers
from .scenario import (
    BIND_KINDS,
    Scenario,
    Step,
    StepReport,
    bind_errno,
    build_model,
    errno_text,
    model_bind,
    resolve,
)
from .topology import Topology, device_bdf
from .verdict import judge


def guest_profile(guest: Guest) -> Profile:
    """The model profile of the guest's kernel: release and exported symbols."""
    kernel = guest.config.kernel
    exported: frozenset[str] = frozenset()
    if kernel.kbuild_dir is not None and (kernel.kbuild_dir / "Module.symvers").is_file():
        exported = parse_symvers((kernel.kbuild_dir / "Module.symvers").read_text())
    return profile_for(kernel.release, exported)


def bind_script(bdf: str, kind: str) -> str:
    d = f"/sys/bus/pci/devices/{bdf}"
    name = BIND_KINDS[kind]
    unbind = f"[ ! -e {d}/driver ] || echo {bdf} > {d}/driver/unbind"
    if not name:
        return f"echo > {d}/driver_override; {unbind}"
    return (f"{unbind}; echo {name} > {d}/driver_override && "
            f"echo {bdf} > /sys/bus/pci/drivers/{name}/bind")


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
        self._ready: object = None
        self._drivers: dict[str, str | None] = {}
        self._bound: list[str] = []

    def setup(self, scenario: Scenario) -> None:
        """Reset the module, bind the devices as the scenario says, build the model(s).

        Again with the same bindings and no bind steps run since, only the module is reset
        (one round trip): what the fuzzer's many short sequences need."""
        key = (scenario.topology_path, scenario.bind)
        if self._ready == key:
            self.ctl.op("reset")
            self._build(scenario, self._drivers, self._bound)
            return
        self.ctl.load()
        self.ctl.op("reset")
        wanted = dict(scenario.bind)
        order = sorted(self.topology.devices, key=lambda d: self.bdfs[d.id])
        for d in order:  # unbind everything first: binding order decides SMMUv3 groups
            self.guest.run(bind_script(self.bdfs[d.id], "none"))
        bound = []
        for d in order:
            kind = wanted.get(d.id, "none")
            if kind != "none":
                r = self.guest.run(bind_script(self.bdfs[d.id], kind))
                if r.exit_code == 0:
                    bound.append(d.id)
        drivers: dict[str, str | None] = {m.bdf: m.driver for g in self.guest.groups()
                                          for m in g.members}
        for d in order:
            drivers.setdefault(self.bdfs[d.id], self.ctl.state(self.bdfs[d.id]).driver)
        self._drivers, self._bound, self._ready = drivers, bound, key
        self._build(scenario, drivers, bound)

    def _build(self, scenario: Scenario, drivers: dict[str, str | None],
               bound: list[str]) -> None:
        platform = self.guest.config.platform
        self.model = build_model(scenario, platform, self.profile, drivers, bound)
        self.extra_models = [build_model(scenario, platform, p, drivers, bound)
                             for p in self.extra]

    def kernel_states(self) -> dict[str, str]:
        results = self.ctl.batch([f"state {b}" for b in self.bdfs.values()])
        return {ident: r.get("domain") or "?" for ident, r in zip(self.bdfs, results,
                                                                  strict=True)}

    def model_states(self, model: Model) -> dict[str, str]:
        return {ident: model.domain_of(bdf) for ident, bdf in self.bdfs.items()}

    def step(self, index: int, step: Step) -> StepReport:
        assert self.model is not None, "call setup() first"
        if step.op:
            line = resolve(step.op, self.topology)
            # One round trip: the log mark, the operation with the state reads, the log slice.
            out = self.guest.check(
                "m=$(ih-kmsg -n); m=${m%% *}; "
                + batch_script([line, *(f"state {b}" for b in self.bdfs.values())])
                + "; echo @@kmsg; ih-kmsg $m")
            text, _, log = out.partition("@@kmsg\n")
            results = parse_results(text)
            events = classify(parse_records(log))
            head, states = results[0], results[1:]
            kernel_rc, kernel_guard = head.rc, head.guard
            kernel_state = {i: r.get("domain") or "?" for i, r in zip(self.bdfs, states,
                                                                      strict=True)}
            outcome = self.model.apply(line)
            model_rc, model_guard = outcome.rc, outcome.guard
            extra = [m.apply(line).rc for m in self.extra_models]
        else:
            self._ready = None  # bindings change: the next setup does it all again
            mark = self.guest.kmsg_mark()
            kernel_rc, model_rc, kernel_guard, model_guard = 0, 0, False, False
            extra = [0 for _ in self.extra_models]
            for ident, kind in step.bind:
                bdf = self.bdfs[ident]
                r = self.guest.run(bind_script(bdf, kind))
                krc = 0 if r.exit_code == 0 else bind_errno(r.stderr.decode(errors="replace"))
                mrc = model_bind(self.model, bdf, kind)
                extra = [e or model_bind(m, bdf, kind) for e, m in zip(extra, self.extra_models,
                                                                          strict=True)]
                kernel_rc, model_rc = kernel_rc or krc, model_rc or mrc
            kernel_state = self.kernel_states()
            events = self.guest.events_since(mark.seq)
        report = StepReport(index, step.label, kernel_rc, model_rc, kernel_guard, model_guard,
                            kernel_state, self.model_states(self.model),
                            [e.signature for e in events if e.kind != "iommu_group_add"],
                            extra=extra)
        self._judge(report, step, events)
        return report

    def _judge(self, report: StepReport, step: Step, events: list[Event]) -> None:
        p = report.problems
        if report.kernel_rc != report.model_rc or report.kernel_guard != report.model_guard:
            p.append(f"kernel {errno_text(report.kernel_rc)}"
                     f"{' (guard)' if report.kernel_guard else ''}, model "
                     f"{errno_text(report.model_rc)}{' (guard)' if report.model_guard else ''}")
        for ident, dom in report.kernel_state.items():
            if report.model_state.get(ident) != dom:
                p.append(f"{ident}: kernel {dom}, model {report.model_state.get(ident)}")
        if step.expect is not None and report.kernel_rc != step.expect:
            p.append(f"expected {errno_text(step.expect)}, kernel gave "
                     f"{errno_text(report.kernel_rc)}")
        for ident, dom in step.state:
            if report.kernel_state.get(ident) != dom:
                p.append(f"expected {ident} on {dom}, kernel has {report.kernel_state.get(ident)}")
        verdict = judge(events, step.events)
        p += [f"unexpected kernel {e.kind}: {e.signature}" for e in verdict.unexpected]
        p += [f"expected event {m!r} did not appear" for m in verdict.missing]


def scenario_toml(name: str, topology: str, lines: Sequence[str]) -> str:
    """A ready scenario file for a sequence of operations (what the fuzzer prints)."""
    out = [f"name = {name!r}".replace("'", '"'), f'topology = "{topology}"', ""]
    for line in lines:
        out += ["[[step]]", f"op = {shlex.quote(line)}".replace("'", '"'), ""]
    return "\n".join(out)
