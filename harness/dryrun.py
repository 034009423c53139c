"""A scenario on the model alone, as the Differ would run it after binding as the scenario
says, with the bridges' drivers the guests show: the author's checks the model breaks, and the
kernel branches the model took (pure; what rule coverage and the catalogue's model tests use)."""

from __future__ import annotations

from dataclasses import dataclass

from .model import Profile
from .model.build import build_model
from .platforms import Platform
from .scenario import Scenario
from .steps import DRIVER_NAMES, DriverChoice
from .topology import device_bdf


@dataclass(frozen=True)
class DryRun:
    problems: tuple[str, ...]  # the author's checks the model breaks
    hits: tuple[str, ...]  # the kernel branches the model took, in order


def bridge_driver(platform: Platform) -> str | None:
    """Observed (tests/data/snapshot-*-pci-stub.txt): the PCIe-to-PCI bridge is bound to
    shpchp on aarch64, to nothing on x86_64."""
    return "shpchp" if platform.groups_need_driver else None


def dry_run(s: Scenario, platform: Platform, profile: Profile) -> DryRun:
    """Where the profile says SMMUv3 groups form at device add (7.2), every device is grouped
    in address order whatever is bound: what the topology prediction has to do for it."""
    topo = s.topology
    bdfs = {d.id: device_bdf(topo, d) for d in topo.devices}
    kinds = dict(s.bind)
    order = sorted(topo.devices, key=lambda d: bdfs[d.id])
    bound = [d.id for d in order if kinds.get(d.id, DriverChoice.NONE) is not DriverChoice.NONE]
    grouped = [d.id for d in order] if not profile.smmu_groups_need_driver else bound
    drivers: dict[str, str | None] = {
        bdf: DRIVER_NAMES[kinds.get(i, DriverChoice.NONE)] or None for i, bdf in bdfs.items()}
    drivers.update({f"0000:00:{b.slot:02x}.0": bridge_driver(platform) for b in topo.bridges})
    model = build_model(s, platform, profile, drivers, grouped)
    problems = []
    for n, step in enumerate(s.steps, start=1):
        where = f"{s.path.name} step {n} ({step.label}) on {platform.name}/{profile.name}"
        answer = step.action.on_model(model, bdfs)
        checks = step.checks
        expect = checks.rc.get(profile.name)
        if expect is not None and answer.rc != expect:
            problems.append(f"{where}: expected {expect}, model {answer.rc}")
        for ident, dom in checks.state.get(profile.name):
            if model.domain_of(bdfs[ident]) != dom:
                problems.append(f"{where}: expected {ident} on {dom}, model "
                                f"{model.domain_of(bdfs[ident])}")
        for ident, typ in checks.types.get(profile.name):
            if model.type_of(bdfs[ident]) != typ:
                problems.append(f"{where}: expected {ident} type {typ}")
        for event in checks.events.get(profile.name):
            if event.startswith("warning:") and answer.warn != event.split(":", 1)[1]:
                problems.append(f"{where}: expected {event}, model warns "
                                f"{answer.warn or 'nothing'}")
    return DryRun(tuple(problems), tuple(model.hits))
