"""Differential fuzzing inside a run (``run --fuzz-steps N``): seeded random operation
sequences over the topology's devices and two domain handles, on the guest and the model step
by step; the first disagreement stops its sequence and becomes a ready scenario file. The
operation alphabet is shared with the hypothesis state machine of the integration tests
(which shrinks what it finds)."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from .differ import Differ
from .dmesg import format_records
from .errors import GuestDied, GuestHung
from .guest import Guest
from .model import Profile
from .model.profiles import ProfileChoice
from .results import Outcome, ScenarioResult, StepResult, outcome_of
from .scenario import Scenario
from .steps import DriverChoice, Step

HANDLES = ("a", "b")
# Each operation the fuzzer draws, its words from DOMAINS ({dev}: the topology's devices).
TEMPLATES = (
    "alloc {handle} {dev}", "free {handle}",
    "attach_dev {handle} {dev}", "detach_dev {handle} {dev}",
    "attach_group {handle} {dev}", "detach_group {handle} {dev}",
    "claim_group {dev} {owner}", "release_group {dev}",
    "claim_dev {dev} {owner}", "release_dev {dev}",
    "map {handle} {map_iova} 0x1000", "unmap {handle} {map_iova}",
    # 6.12-only calls (the module refuses them on 6.1) and the WARN paths, called on purpose.
    "replace {handle} {dev}", "raw_detach_dev {handle} {dev}",
    "raw_detach_group {handle} {dev}", "raw_release_group {dev}",
    "attach_pasid {handle} {dev} {pasid}", "detach_pasid {handle} {dev} {pasid}",
    # DMA through edu (about 0.2 s each: QEMU's edu completes a transfer on a 100 ms timer).
    "dma {dev} {handle} 0x100000 0x100", "dma_raw {dev} {raw_iova} to_ram",
    # Writes to the group's sysfs type (each sequence starts on a pristine guest).
    "set_type {dev} {type}",
    # VFIO from the guest's user space (ih-vfio), on whichever device: the fuzz base puts one
    # device on vfio-pci (FUZZ_VFIO), so its group's calls go deep and the others' are refused.
    "vfio_container", "vfio_group {vdev}", "vfio_status {vdev}", "vfio_set_container {vdev}",
    "vfio_unset_container {vdev}", "vfio_set_iommu", "vfio_map {map_iova} 0x10000",
    "vfio_unmap {map_iova} 0x10000", "vfio_device {vdev}", "vfio_dma {vdev} {map_iova} 0x100",
    "vfio_dma_to {vdev} {raw_iova} 0x40", "vfio_close_device {vdev}",
    "vfio_close_group {vdev}", "vfio_close_container",
)
# iommufd and VFIO's device cdev (ih-vfio's iommufd_* commands), drawn only where the kernel
# has them (IOMMUFD_NEEDS): two IOASes and a HWPT on either.
IOMMUFD_TEMPLATES = (
    "iommufd_open", "iommufd_close", "iommufd_bind {vdev}", "iommufd_unbind {vdev}",
    "iommufd_ioas {ioas}", "iommufd_hwpt h {vdev} {ioas}",
    "iommufd_map {ioas} {map_iova} 0x10000", "iommufd_unmap {ioas} {map_iova} 0x10000",
    "iommufd_attach {vdev} {pt}", "iommufd_detach {vdev}",
    "iommufd_dma {vdev} {map_iova} 0x100", "iommufd_destroy {pt}",
)
IOMMUFD_NEEDS = ("IOMMUFD", "VFIO_DEVICE_CDEV")
# The attach and ownership calls alone: what a wrong attach rule needs to be caught.
ATTACH_TEMPLATES = TEMPLATES[:8]
DOMAINS: dict[str, tuple[str, ...]] = {
    "handle": HANDLES, "owner": ("o", "p"), "map_iova": ("0x100000", "0x200000"),
    "raw_iova": ("0x100000", "0x900000"), "pasid": ("0", "1", "2"),
    "type": ("identity", "DMA", "DMA-FQ", "auto"), "ioas": ("i", "j"), "pt": ("i", "j", "h")}


def has_iommufd(config: Mapping[str, str]) -> bool:
    """Whether a kernel of this configuration has iommufd and VFIO's cdev (Debian's packages
    have neither)."""
    return all(config.get(f"CONFIG_{name}") in ("y", "m") for name in IOMMUFD_NEEDS)


def templates_for(config: Mapping[str, str]) -> tuple[str, ...]:
    """The fuzzer's alphabet for a kernel of this configuration: iommufd's calls join where
    the kernel has them."""
    # twice each: a bind, an attach and a replace must meet within one short sequence
    return TEMPLATES + IOMMUFD_TEMPLATES * 2 if has_iommufd(config) else TEMPLATES
SETUP = ("alloc a {dev0}", "alloc b {dev1}")  # both handles exist from the start
# With iommufd in the alphabet, /dev/iommu open and both IOASes mapping the IOVA the DMA
# templates use, so that binds, attaches and replaces go deep within a short sequence.
IOMMUFD_SETUP = ("iommufd_open", "iommufd_ioas i", "iommufd_ioas j",
                 "iommufd_map i 0x100000 0x10000", "iommufd_map j 0x100000 0x10000")


def fuzz_bindings(devices: Sequence[str]) -> tuple[tuple[str, DriverChoice], ...]:
    """The fuzz base's drivers: the second device on vfio-pci, every other one on the owning
    edu driver (so the module's operations and VFIO's both reach every rule)."""
    return tuple((d, DriverChoice.VFIO if i == FUZZ_VFIO else DriverChoice.OWNED)
                 for i, d in enumerate(devices))


FUZZ_VFIO = 1  # the index of the device the fuzz base binds to vfio-pci


def fields(template: str) -> list[str]:
    return re.findall(r"\{(\w+)\}", template)


def draw(rng: random.Random, devices: Sequence[str],
         templates: Sequence[str] = TEMPLATES) -> str:
    """One random operation (pure, given the generator)."""
    template = rng.choice(templates)
    # {vdev}: the device on vfio-pci three times in four, so VFIO's calls go deep
    vfio = devices[min(FUZZ_VFIO, len(devices) - 1)]
    domains: Mapping[str, Sequence[str]] = {**DOMAINS, "dev": devices,
                                            "vdev": [vfio, vfio, vfio, *devices]}
    return template.format(**{f: rng.choice(domains[f]) for f in fields(template)})


def sequences(seed: int, steps: int, devices: Sequence[str], length: int = 25,
              templates: Sequence[str] = TEMPLATES) -> list[list[str]]:
    """``steps`` random operations in sequences of at most ``length``, each after the set-up
    allocations; the same for the same seed, devices and alphabet (pure)."""
    rng = random.Random(seed)
    out, left = [], steps
    while left > 0:
        n = min(left, rng.randint(1, length))
        setup = [s.format(dev0=devices[0], dev1=devices[min(1, len(devices) - 1)])
                 for s in SETUP]
        if IOMMUFD_TEMPLATES[0] in templates:
            setup += IOMMUFD_SETUP
        out.append(setup + [draw(rng, devices, templates) for _ in range(n)])
        left -= n
    return out


def scenario_toml(name: str, topology: str, lines: Sequence[str],
                  bind: Sequence[tuple[str, str]] = ()) -> str:
    """A ready scenario file for a sequence of operations (what a fuzzer prints), with the
    drivers its devices were bound to."""
    out = [f"name = {name!r}".replace("'", '"'), f'topology = "{topology}"', ""]
    if bind:
        out += ["[bind]", *(f'{d} = "{k}"' for d, k in bind), ""]
    for line in lines:
        out += ["[[step]]", f"op = {json.dumps(line)}", ""]  # a JSON string is a TOML one
    return "\n".join(out)


@dataclass(frozen=True)
class Fuzz:
    """A fuzzing run as an item of a job: ``steps`` random operations from ``seed`` on the
    devices of ``base`` (its topology and bindings)."""
    base: Scenario
    steps: int
    seed: int = 0
    templates: tuple[str, ...] = TEMPLATES  # the alphabet (templates_for the kernel)

    @property
    def name(self) -> str:
        return f"fuzz ({self.steps} steps, seed {self.seed})"

    @property
    def path(self) -> str:
        """What a result records as the run's file."""
        return f"fuzz:{self.seed}"


def run_fuzz(start: Callable[[int], Guest], fuzz: Fuzz, choice: ProfileChoice,
             extra: Sequence[Profile], head: ScenarioResult,
             started: Callable[[Guest], None] = lambda g: None) -> ScenarioResult:
    """Every sequence on a pristine guest of its own (``start(k)`` for the k-th, not started)
    and on the model; stops at the first disagreement, whose sequence is the result's
    ``detail`` as a scenario file. ``head`` is the result's record of the guest, kernel,
    profile and of this run. A guest that dies or hangs fails the run (outcome DIED)."""
    began = time.monotonic()
    devices = [d.id for d in fuzz.base.topology.devices]
    done: list[StepResult] = []
    logs: list[str] = []
    result = head
    for k, lines in enumerate(sequences(fuzz.seed, fuzz.steps, devices,
                                        templates=fuzz.templates), start=1):
        with start(k) as guest:
            started(guest)
            result = replace(result, console_log=str(guest.console_log))
            try:
                mark = guest.kmsg_mark()
                failed = _sequence(guest, fuzz, choice, extra, lines, done)
                logs.append(format_records(guest.kmsg_since(mark.seq)))
            except (GuestDied, GuestHung) as exc:
                return replace(result, outcome=Outcome.DIED, detail=exc.problem,
                               steps=tuple(done), kernel_log=guest.console_tail(),
                               duration=time.monotonic() - began)
        if failed:
            repro = scenario_toml(f"fuzz reproducer ({choice.profile.name}, seed "
                                  f"{fuzz.seed})", fuzz.base.topology.name, lines[:failed],
                                  [(d, str(k)) for d, k in fuzz.base.bind])
            return replace(result, outcome=outcome_of(done), steps=tuple(done), detail=repro,
                           duration=time.monotonic() - began, kernel_log="".join(logs))
    return replace(result, outcome=outcome_of(done) if done else Outcome.PASS,
                   steps=tuple(done), duration=time.monotonic() - began,
                   kernel_log="".join(logs))


def _sequence(guest: Guest, fuzz: Fuzz, choice: ProfileChoice, extra: Sequence[Profile],
              lines: Sequence[str], done: list[StepResult]) -> int:
    """One sequence on the guest and the model; the number of its first disagreeing step
    (0 when all agreed)."""
    differ = Differ(guest, fuzz.base.topology, choice.profile, extra)
    differ.setup(fuzz.base)
    for i, line in enumerate(lines, start=1):
        step = differ.step(len(done) + 1, Step.op(line))
        done.append(step)
        if not step.ok:
            return i
    return 0
