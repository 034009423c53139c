"""Verdicts on kernel events (pure): unexpected splats fail, declared expectations must appear.

An expectation is an event kind (``"warning"``, ``"dmar_fault"``), a full signature
(``"warning:ih_smoke_init"``), or a signature prefix ending at a ``:`` boundary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from .dmesg import Event
from .steps import ModelView, Observation, Pairs, Step, errno_text


def matches(event: Event, pattern: str) -> bool:
    return (pattern in (event.kind, event.signature)
            or event.signature.startswith(pattern + ":"))


@dataclass(frozen=True)
class Verdict:
    unexpected: tuple[Event, ...]
    missing: tuple[str, ...]
    expected: tuple[Event, ...]

    @property
    def ok(self) -> bool:
        return not self.unexpected and not self.missing

    def explain(self, where: str = "") -> str:
        """A failure message: each problem, then the unexpected reports themselves."""
        head = f" in {where}" if where else ""
        parts = [f"unexpected kernel {e.kind}{head}: {e.signature} ({e.summary[:160]})"
                 for e in self.unexpected]
        parts += [f"expected kernel event {m!r}{head} did not appear" for m in self.missing]
        for e in self.unexpected:
            parts.append("\n".join(["--- " + e.signature, *e.lines[:60]]))
        return "\n".join(parts)


def judge(events: Iterable[Event], expect: Sequence[str] = ()) -> Verdict:
    events = list(events)
    expected = tuple(e for e in events if any(matches(e, p) for p in expect))
    unexpected = tuple(e for e in events if e.is_splat and e not in expected)
    missing = tuple(p for p in expect if not any(matches(e, p) for e in events))
    return Verdict(unexpected, missing, expected)


# ------------------------------------------------------------------------- a scenario step

ProblemKind = Literal["disagree", "expectation", "splat"]
# Kernel events of an IOMMU translation fault, and how many faulting steps within the rate
# limit's window are sure to be reported: one (measured: on SMMUv3 one 256-byte edu transfer
# raises more events than the burst of 10; on VT-d two faulting dma steps use it up).
FAULT_KINDS = ("dmar_fault", "smmu_event")
FAULT_WINDOW = 5.5
FAULT_STEPS_REPORTED = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a step: the model disagrees with the kernel, the kernel broke the
    author's expectation, or the kernel logged a splat nobody predicted."""
    kind: ProblemKind
    text: str


@dataclass(frozen=True)
class StepVerdict:
    problems: tuple[Problem, ...]
    expected_events: tuple[str, ...]  # signatures of the splats the step expected
    faulted: bool  # the step counts against the fault reports' rate limit

    @property
    def ok(self) -> bool:
        return not self.problems


def _rc(rc: int | None, guard: bool) -> str:
    return errno_text(rc) + (" (guard)" if guard else "")


def _compare(seen: Pairs, want: Pairs, what: str) -> list[str]:
    mine = dict(want)
    return [f"{ident}{what}: kernel {value}, model {mine.get(ident)}"
            for ident, value in seen if mine.get(ident) != value]


def judge_step(step: Step, profile: str, seen: Observation, model: ModelView,
               recent_faults: int) -> StepVerdict:
    """The verdict on one step (pure): the kernel's answer, domains, group types and events
    against the model's and against the author's checks under ``profile``.
    ``recent_faults`` is how many faulting steps the guest had within FAULT_WINDOW before this
    one: the IOMMU drivers rate-limit fault reports (DEFAULT_RATELIMIT_BURST per 5 s:
    intel/dmar.c dmar_fault, arm-smmu-v3.c arm_smmu_evtq_thread), so a predicted fault must
    show only when none came just before."""
    p = model.prediction
    out: list[Problem] = []

    def add(kind: ProblemKind, texts: Iterable[str]) -> None:
        out.extend(Problem(kind, t) for t in texts)

    if (seen.rc, seen.guard) != (p.rc, p.guard):
        add("disagree", [f"kernel {_rc(seen.rc, seen.guard)}, model {_rc(p.rc, p.guard)}"])
    add("disagree", _compare(seen.states, model.states, ""))
    add("disagree", _compare(seen.types, model.types, " type"))
    checks = step.checks
    expect = checks.rc.get(profile)
    if expect is not None and seen.rc != expect:
        add("expectation", [f"expected {errno_text(expect)}, kernel gave {errno_text(seen.rc)}"])
    states, types = dict(seen.states), dict(seen.types)
    add("expectation", [f"expected {i} on {d}, kernel has {states.get(i)}"
                        for i, d in checks.state.get(profile) if states.get(i) != d])
    add("expectation", [f"expected {i} type {t}, kernel has {types.get(i)}"
                        for i, t in checks.types.get(profile) if types.get(i) != t])
    events = list(seen.events)
    faults = [e for e in events if e.kind in FAULT_KINDS]
    if faults and not p.fault:
        add("disagree", [f"unexpected DMA fault: {faults[0].signature}"])
    if p.fault and not faults and recent_faults < FAULT_STEPS_REPORTED:
        add("disagree", ["the model predicts a DMA fault; the kernel reported none"])
    # A WARN the model predicts is an event the step must show; any other is a splat.
    warns = (f"warning:{p.warn}",) if p.warn else ()
    wanted = checks.events.get(profile)
    verdict = judge(events, (*wanted, *warns))
    add("splat", [f"unexpected kernel {e.kind}: {e.signature}" for e in verdict.unexpected])
    for m in verdict.missing:
        add("disagree" if m in warns else "expectation", [f"expected event {m!r} did not appear"])
    return StepVerdict(tuple(out), tuple(e.signature for e in verdict.expected),
                       bool(faults) or p.fault)
