"""Running steps on a guest and on the model side by side (the I/O half of scenarios and of
the differential fuzzer)."""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .attach import AttachCtl, batch_script, parse_results
from .dmesg import Event, classify, parse_records
from .guest import Guest
from .kernel import KernelArtifact
from .model import Model, Profile
from .model.profiles import ProfileChoice, choose_profile
from .modules import parse_symvers
from .scenario import (
    BIND_KINDS,
    SHELL_OPS,
    Scenario,
    Step,
    StepReport,
    bind_errno,
    build_model,
    errno_text,
    model_bind,
    resolve,
)
from .sysfs import IommuGroup
from .topology import Topology, device_bdf
from .verdict import judge


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


# Kernel events of an IOMMU translation fault, and how many faulting steps within the rate
# limit's window are sure to be reported: one (measured: on SMMUv3 one 256-byte edu transfer
# raises more events than the burst of 10; on VT-d two faulting dma steps use it up).
FAULT_KINDS = ("dmar_fault", "smmu_event")
FAULT_WINDOW = 5.5
FAULT_STEPS_REPORTED = 1


def types_script(bdfs: Sequence[str]) -> str:
    """One line per device: its group's sysfs type, or "none" without a group."""
    return (f"for d in {' '.join(bdfs)}; do cat /sys/bus/pci/devices/$d/iommu_group/type "
            "2>/dev/null || echo none; done")


def set_type_script(bdf: str, request: str) -> str:
    """Write a group's sysfs type; print the shell's error text (empty when it worked), or
    'No such file or directory' when the device has no group."""
    t = f"/sys/bus/pci/devices/{bdf}/iommu_group/type"
    return (f"if [ -e {t} ]; then (echo {shlex.quote(request)} > {t}) 2>&1 | tr -d '\\n'; "
            "else printf 'No such file or directory'; fi; echo")


def restore_types_script(bdfs: Sequence[str], wanted: str) -> str:
    """Best effort: put every device's group back on the boot-time default domain type."""
    return "; ".join(f"t=/sys/bus/pci/devices/{b}/iommu_group/type; [ ! -e $t ] || "
                     f"[ \"$(cat $t)\" = {wanted} ] || echo {wanted} > $t 2>/dev/null"
                     for b in bdfs) + "; true"


def auto_type(groups: Sequence[IommuGroup], devices: Sequence[str]) -> str:
    """The kernel's default domain type (iommu_def_domain_type, which "auto" asks for), as the
    groups of the machine's own devices show it: nobody writes their types."""
    untouched = [g.type for g in groups if not g.bdfs & set(devices)]
    # A tie goes to the first name in sorted order, so the answer never depends on hashing.
    return max(sorted(set(untouched)), key=untouched.count) if untouched else "DMA"


def bind_script(bdf: str, kind: str, via: str = "bind") -> str:
    """Unbind the device, then bind it (driver_override names the driver) through the
    driver's ``bind`` file or the bus's ``drivers_probe``."""
    d = f"/sys/bus/pci/devices/{bdf}"
    name = BIND_KINDS[kind]
    unbind = f"[ ! -e {d}/driver ] || echo {bdf} > {d}/driver/unbind"
    if not name:
        return f"echo > {d}/driver_override; {unbind}"
    target = f"/sys/bus/pci/drivers/{name}/bind" if via == "bind" else \
        "/sys/bus/pci/drivers_probe"
    return f"{unbind}; echo {name} > {d}/driver_override && echo {bdf} > {target}"


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
        self._types: dict[str, str] = {}
        self.auto_type = ""

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
        if not self.auto_type:
            self.auto_type = auto_type(self.guest.groups(), list(self.bdfs.values()))
        wanted = dict(scenario.bind)
        order = sorted(self.topology.devices, key=lambda d: self.bdfs[d.id])
        for d in order:  # unbind everything first: binding order decides SMMUv3 groups
            self.guest.run(bind_script(self.bdfs[d.id], "none"))
        # Type writes of earlier scenarios outlive a module reset: undo them while unbound.
        self.guest.run(restore_types_script(list(self.bdfs.values()), self.auto_type))
        bound = []
        for d in order:
            kind = wanted.get(d.id, "none")
            if kind != "none":
                r = self.guest.run(bind_script(self.bdfs[d.id], kind))
                if r.exit_code == 0:
                    bound.append(d.id)
        groups = self.guest.groups()
        drivers: dict[str, str | None] = {m.bdf: m.driver for g in groups for m in g.members}
        self._types = {m.bdf: g.type for g in groups for m in g.members}
        for d in order:
            drivers.setdefault(self.bdfs[d.id], self.ctl.state(self.bdfs[d.id]).driver)
        self._drivers, self._bound, self._ready = drivers, bound, key
        self._build(scenario, drivers, bound)

    def _build(self, scenario: Scenario, drivers: dict[str, str | None],
               bound: list[str]) -> None:
        platform = self.guest.config.platform
        self.model, *self.extra_models = [
            build_model(scenario, platform, p, drivers, bound, self._types, self.auto_type)
            for p in (self.profile, *self.extra)]

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

    def step(self, index: int, step: Step) -> StepReport:
        assert self.model is not None, "call setup() first"
        outcome = None
        if step.op:
            line = resolve(step.op, self.topology)
            shell_op = line.split()[0] in SHELL_OPS
            if shell_op:
                self._ready = None  # a type write outlives a module reset
                _, bdf, request = line.split()
                action = set_type_script(bdf, request)
            else:
                action = batch_script([line])
            # One round trip: the log mark, the operation, the state and type reads, the log.
            out = self.guest.check("m=$(ih-kmsg -n); m=${m%% *}; " + action + "; echo @@state; "
                                   + self._reads_script() + "; echo @@kmsg; ih-kmsg $m")
            head, _, rest = out.partition("@@state\n")
            reads, _, log = rest.partition("@@kmsg\n")
            events = classify(parse_records(log))
            if shell_op:
                error = head.strip()
                kernel_rc, kernel_guard = (bind_errno(error) if error else 0), False
            else:
                result = parse_results(head)[0]
                kernel_rc, kernel_guard = result.rc, result.guard
            kernel_state, kernel_types = self._parse_reads(reads)
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
                r = self.guest.run(bind_script(bdf, kind, step.via))
                krc = 0 if r.exit_code == 0 else bind_errno(r.stderr.decode(errors="replace"))
                mrc = model_bind(self.model, bdf, kind, step.via)
                extra = [e or model_bind(m, bdf, kind, step.via)
                         for e, m in zip(extra, self.extra_models, strict=True)]
                kernel_rc, model_rc = kernel_rc or krc, model_rc or mrc
            kernel_state, kernel_types = self._parse_reads(self.guest.check(
                self._reads_script()))
            events = self.guest.events_since(mark.seq)
        report = StepReport(index, step.label, kernel_rc, model_rc, kernel_guard, model_guard,
                            kernel_state, self.model_states(self.model),
                            [e.signature for e in events if e.kind != "iommu_group_add"],
                            extra=extra, kernel_types=kernel_types,
                            model_types={i: self.model.type_of(b) for i, b in self.bdfs.items()},
                            model_warn=outcome.warn if outcome else "",
                            model_fault=outcome.fault if outcome else False)
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
        for ident, typ in report.kernel_types.items():
            if report.model_types.get(ident) != typ:
                p.append(f"{ident} type: kernel {typ}, model {report.model_types.get(ident)}")
        expect = step.expected(self.profile.name)
        if expect is not None and report.kernel_rc != expect:
            p.append(f"expected {errno_text(expect)}, kernel gave "
                     f"{errno_text(report.kernel_rc)}")
        for ident, dom in step.state:
            if report.kernel_state.get(ident) != dom:
                p.append(f"expected {ident} on {dom}, kernel has {report.kernel_state.get(ident)}")
        for ident, typ in step.types:
            if report.kernel_types.get(ident) != typ:
                p.append(f"expected {ident} type {typ}, kernel has "
                         f"{report.kernel_types.get(ident)}")
        # DMA faults: none where the model predicts none; one where it predicts one, unless the
        # IOMMU driver's report rate limit (DEFAULT_RATELIMIT_BURST per 5 s: intel/dmar.c
        # dmar_fault, arm-smmu-v3.c arm_smmu_evtq_thread) may have swallowed it.
        faults = [e for e in events if e.kind in FAULT_KINDS]
        if faults and not report.model_fault:
            p.append(f"unexpected DMA fault: {faults[0].signature}")
        now = time.monotonic()
        recent = [t for t in self.guest.fault_times if now - t < FAULT_WINDOW]
        if report.model_fault and not faults and len(recent) < FAULT_STEPS_REPORTED:
            p.append("the model predicts a DMA fault; the kernel reported none")
        self.guest.fault_times[:] = recent + ([now] if faults or report.model_fault else [])
        # A WARN the model predicts is an event the step must show; any other is a splat.
        warns = [f"warning:{report.model_warn}"] if report.model_warn else []
        verdict = judge(events, (*step.events, *warns))
        report.expected_events = [e.signature for e in verdict.expected]
        p += [f"unexpected kernel {e.kind}: {e.signature}" for e in verdict.unexpected]
        p += [f"expected event {m!r} did not appear" for m in verdict.missing]


def scenario_toml(name: str, topology: str, lines: Sequence[str]) -> str:
    """A ready scenario file for a sequence of operations (what the fuzzer prints)."""
    out = [f"name = {name!r}".replace("'", '"'), f'topology = "{topology}"', ""]
    for line in lines:
        out += ["[[step]]", f"op = {shlex.quote(line)}".replace("'", '"'), ""]
    return "\n".join(out)
