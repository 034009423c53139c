"""Plain-text reports for the terminal: a scenario's step table, and the run's matrix."""

from __future__ import annotations

from collections.abc import Sequence

from ..results import Outcome, ScenarioResult, StepResult
from ..steps import errno_text

# What a matrix cell shows for each outcome.
CELL = {Outcome.PASS: "pass", Outcome.SKIPPED: "-", Outcome.DISAGREE: "DIFF",
        Outcome.FAIL: "FAIL", Outcome.SPLAT: "SPLAT", Outcome.DIED: "DIED"}


def title(r: ScenarioResult) -> str:
    assumed = " (assumed)" if r.profile_assumed else ""
    return f"== {r.scenario} ({r.platform}, {r.release}, model {r.profile}{assumed})"


def _answer(rc: int | None, guard: bool, warn: str = "", fault: bool = False) -> str:
    return (errno_text(rc) + ("*" if guard else "") + ("!" if warn else "")
            + ("^" if fault else ""))


def step_line(s: StepResult) -> str:
    k = _answer(s.kernel.rc, s.kernel.guard)
    m = _answer(s.model.rc, s.model.guard, s.model_warn, s.model_fault)
    others = "".join(f" {errno_text(rc):<17}" for rc in s.also)
    verdict = "ok" if s.ok else "DIFF: " + "; ".join(p.text for p in s.problems)
    ev = f"  [{', '.join(s.events)}]" if s.events else ""
    return f"{s.index:>3} {s.label[:44]:<44} {k:<10} {m:<10}{others} {verdict}{ev}"


def step_table(r: ScenarioResult) -> str:
    """One row per step: what it did, the kernel's answer, the model's, the verdict, events.
    Marks: * the module's guard refused, ! the model predicts a WARN, ^ a DMA fault."""
    cols = "".join(f" {p[:16]:<17}" for p in r.also_profiles)
    lines = [f"{'#':>3} {'step':<44} {'kernel':<10} {'model':<10}{cols} verdict"]
    return "\n".join(lines + [step_line(s) for s in r.steps])


def format_scenario(r: ScenarioResult) -> str:
    if r.outcome is Outcome.SKIPPED:
        return f"{title(r)}: skipped, {r.detail}"
    if r.outcome is Outcome.DIED:
        return f"{title(r)}\n   FAILED: {r.detail} (see {r.console_log or 'its console log'})"
    verdict = "agree" if r.ok else f"{r.outcome.value.upper()}"
    return f"{title(r)}\n{step_table(r)}\n   {verdict}"


def columns(runs: Sequence[ScenarioResult]) -> list[tuple[str, str]]:
    """The matrix's columns, (platform, kernel spec), in the order the runs came."""
    return list(dict.fromkeys(r.cell for r in runs))


def rows(runs: Sequence[ScenarioResult]) -> list[str]:
    return list(dict.fromkeys(r.scenario for r in runs))


def format_matrix(runs: Sequence[ScenarioResult]) -> str:
    """Scenario × (platform, kernel): pass, DIFF (model disagrees), FAIL (an expectation),
    SPLAT (an unpredicted kernel splat), DIED (the guest crashed or hung), - (not written
    for this profile or platform); then the totals."""
    cols = columns(runs)
    cells = {(r.scenario, r.cell): r for r in runs}
    names = rows(runs)
    width = max([len(n) for n in names] + [8])
    heads = [f"{p.split('-')[0]} {k.removeprefix('debian:')}" for p, k in cols]
    cw = max([len(h) for h in heads] + [5])
    lines = [f"{'scenario':<{width}}  " + "  ".join(f"{h:<{cw}}" for h in heads).rstrip()]
    for n in names:
        lines.append(f"{n:<{width}}  " + "  ".join(
            f"{CELL[cells[(n, c)].outcome] if (n, c) in cells else '':<{cw}}"
            for c in cols).rstrip())
    lines.append(summary(runs))
    return "\n".join(lines)


def summary(runs: Sequence[ScenarioResult]) -> str:
    counts = {o: sum(r.outcome is o for r in runs) for o in Outcome}
    parts = [f"{n} {o.value}" for o, n in counts.items() if n]
    return f"{len(runs)} scenario runs: " + ", ".join(parts) if runs else "no scenario runs"
