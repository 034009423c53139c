"""What a run found, and how two runs differ (pure): the values ``validate`` reports and
``bisect`` matches on.

A *finding* is one thing a run shows wrong, named so that the same failure on another kernel
build has the same name: a step where the kernel's answer broke an expectation or disagreed
with the model (scenario, step, the answer), a kernel-log event nobody predicted (scenario,
step, the event's signature), or a guest that died (scenario, the fatal event). Durations,
addresses and times are not part of a name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .results import Outcome, RunResults, ScenarioResult

FindingKind = Literal["disagree", "expectation", "splat", "died"]
_OUTCOME_ORDER = list(Outcome)


@dataclass(frozen=True, order=True)
class Finding:
    platform: str
    scenario: str
    step: str  # "3 attach-device a" or "" for the whole scenario
    kind: FindingKind
    what: str  # "kernel returned -22", an event signature, or the fatal event

    @property
    def signature(self) -> str:
        """The one-line name people read and ``bisect --signature`` takes."""
        where = f"{self.scenario} step {self.step}" if self.step else self.scenario
        return f"{self.platform}: {where}: {self.kind}: {self.what}"


def _rc(rc: int | None) -> str:
    return "no answer" if rc is None else f"kernel returned {rc}"


def scenario_findings(run: ScenarioResult) -> list[Finding]:
    out: list[Finding] = []
    if run.outcome is Outcome.DIED:
        detail = run.detail.splitlines()[0] if run.detail else "the guest died"
        out.append(Finding(run.platform, run.scenario, "", "died", detail))
    for step in run.steps:
        where = f"{step.index} {step.label}"
        kinds = {p.kind for p in step.problems}
        for kind in ("disagree", "expectation"):
            if kind in kinds:
                out.append(Finding(run.platform, run.scenario, where, kind,
                                   _rc(step.kernel.rc)))
        if "splat" in kinds:
            for event in step.events:
                if event not in step.expected_events:
                    out.append(Finding(run.platform, run.scenario, where, "splat", event))
    return out


def findings(results: RunResults) -> list[Finding]:
    """Every finding of a run, in matrix order (the first is what bisect takes by default)."""
    return [f for run in results.runs for f in scenario_findings(run)]


def outcomes(results: RunResults) -> dict[tuple[str, str], Outcome]:
    return {(r.platform, r.scenario): r.outcome for r in results.runs}


def event_signatures(results: RunResults) -> set[str]:
    return {f"{r.platform}: {e}" for r in results.runs for s in r.steps for e in s.events}


def profiles(results: RunResults) -> dict[str, list[str]]:
    """platform → the model profiles its runs used (with "(assumed)" where the kernel's
    release was not one the model knows)."""
    out: dict[str, list[str]] = {}
    for r in results.runs:
        name = r.profile + (" (assumed)" if r.profile_assumed else "")
        if name not in out.setdefault(r.platform, []):
            out[r.platform].append(name)
    return out


@dataclass(frozen=True)
class RunDiff:
    """What changed from a base run to a patched run."""

    newly_failing: tuple[tuple[str, str, Outcome, Outcome], ...]  # platform, scenario, was, is
    newly_passing: tuple[tuple[str, str, Outcome, Outcome], ...]
    new_findings: tuple[Finding, ...]
    gone_findings: tuple[Finding, ...]
    new_events: tuple[str, ...]  # kernel-log signatures only the patched run logged
    gone_events: tuple[str, ...]
    missing: tuple[tuple[str, str], ...]  # ran on the base, not on the patched side
    base_profiles: Mapping[str, Sequence[str]]
    patched_profiles: Mapping[str, Sequence[str]]

    @property
    def worse(self) -> bool:
        """Something newly fails, a new finding or event appeared, or a scenario did not run."""
        return bool(self.newly_failing or self.new_findings or self.new_events or self.missing)

    @property
    def changed(self) -> bool:
        return self.worse or bool(self.newly_passing or self.gone_findings or self.gone_events)


def diff_runs(base: RunResults, patched: RunResults) -> RunDiff:
    before, after = outcomes(base), outcomes(patched)
    failing, passing = [], []
    for key in sorted(set(before) & set(after)):
        was, now = before[key], after[key]
        if _OUTCOME_ORDER.index(now) > _OUTCOME_ORDER.index(was) and now.failed:
            failing.append((*key, was, now))
        elif was.failed and not now.failed:
            passing.append((*key, was, now))
    f_before, f_after = set(findings(base)), set(findings(patched))
    e_before, e_after = event_signatures(base), event_signatures(patched)
    return RunDiff(
        newly_failing=tuple(failing), newly_passing=tuple(passing),
        new_findings=tuple(sorted(f_after - f_before)),
        gone_findings=tuple(sorted(f_before - f_after)),
        new_events=tuple(sorted(e_after - e_before)),
        gone_events=tuple(sorted(e_before - e_after)),
        missing=tuple(sorted(set(before) - set(after))),
        base_profiles=profiles(base), patched_profiles=profiles(patched))


def format_diff(diff: RunDiff, base_name: str = "base", patched_name: str = "patched") -> str:
    """The diff as people read it on a terminal or in a CI log."""
    lines: list[str] = []

    def section(title: str, items: Iterable[str]) -> None:
        items = list(items)
        if items:
            lines.append(f"{title} ({len(items)}):")
            lines.extend(f"  {i}" for i in items)

    section("newly failing", (f"{p}: {s}: {was} -> {now}" for p, s, was, now
                              in diff.newly_failing))
    section("newly passing", (f"{p}: {s}: {was} -> {now}" for p, s, was, now
                              in diff.newly_passing))
    section(f"findings only on {patched_name}", (f.signature for f in diff.new_findings))
    section(f"findings only on {base_name}", (f.signature for f in diff.gone_findings))
    section(f"kernel-log signatures only on {patched_name}", diff.new_events)
    section(f"kernel-log signatures only on {base_name}", diff.gone_events)
    section(f"ran on {base_name} only", (f"{p}: {s}" for p, s in diff.missing))
    for platform in sorted(set(diff.base_profiles) | set(diff.patched_profiles)):
        b = ", ".join(diff.base_profiles.get(platform, ())) or "-"
        p = ", ".join(diff.patched_profiles.get(platform, ())) or "-"
        lines.append(f"profiles on {platform}: {base_name} {b}; {patched_name} {p}")
    verdict = ("WORSE" if diff.worse else "changed, nothing worse" if diff.changed
               else "no change")
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)


def diff_json(diff: RunDiff) -> dict[str, object]:
    def run_change(items: Sequence[tuple[str, str, Outcome, Outcome]]) -> list[dict[str, str]]:
        return [{"platform": p, "scenario": s, "was": str(was), "is": str(now)}
                for p, s, was, now in items]

    return {"worse": diff.worse, "changed": diff.changed,
            "newly_failing": run_change(diff.newly_failing),
            "newly_passing": run_change(diff.newly_passing),
            "new_findings": [f.signature for f in diff.new_findings],
            "gone_findings": [f.signature for f in diff.gone_findings],
            "new_events": list(diff.new_events), "gone_events": list(diff.gone_events),
            "missing": [{"platform": p, "scenario": s} for p, s in diff.missing],
            "base_profiles": dict(diff.base_profiles),
            "patched_profiles": dict(diff.patched_profiles)}


# ------------------------------------------------------------------------------- bisect

BisectVerdict = Literal["good", "bad", "skip"]
EXIT_FOR: Mapping[BisectVerdict, int] = {"good": 0, "bad": 1, "skip": 125}


def bisect_verdict(attempts: Sequence[RunResults | None], signature: str,
                   baseline: Iterable[str]) -> tuple[BisectVerdict, str]:
    """One commit's verdict from its repeated runs (None: the run could not be made, e.g. the
    guest did not boot): bad if any run shows ``signature``; else skip if any run could not
    be made or shows a finding that is neither the signature nor in ``baseline`` (what the good
    commit already showed); else good. Returns the verdict and why."""
    known = set(baseline)
    other = ""
    for results in attempts:
        if results is None:
            other = other or "the run could not be made"
            continue
        names = [f.signature for f in findings(results)]
        if signature in names:
            return "bad", signature
        unknown = [n for n in names if n not in known]
        if unknown:
            other = other or f"another failure: {unknown[0]}"
    return ("skip", other) if other else ("good", "no failure beyond the good commit's")


def pick_signature(bad: RunResults, good: RunResults) -> str | None:
    """The first finding of the bad commit that the good one does not show."""
    seen = {f.signature for f in findings(good)}
    for f in findings(bad):
        if f.signature not in seen:
            return f.signature
    return None
