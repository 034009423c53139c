"""Typed results of scenario runs, and their JSON form (``results.json``, schema in the README).

Every report writer reads these and nothing else; a results file written by one run (or shard)
loads back into the same objects, which is what ``report merge`` does.
"""

from __future__ import annotations

import enum
import json
import os
import platform as host_platform
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .coverage import coverage, coverage_json
from .errors import ConfigError
from .verdict import Problem, ProblemKind

SCHEMA = 1
RESULTS_FILE = "results.json"


class Outcome(enum.StrEnum):
    """A scenario run's outcome, from the best to the worst."""
    SKIPPED = "skipped"  # the scenario is not written for this profile or platform
    PASS = "pass"
    DISAGREE = "disagree"  # the model and the kernel differ
    FAIL = "fail"  # the kernel broke an expectation the scenario's author wrote
    SPLAT = "splat"  # the kernel logged a WARN, BUG, ... nobody predicted
    DIED = "died"  # the guest's kernel crashed or hung

    @property
    def failed(self) -> bool:
        return self not in (Outcome.SKIPPED, Outcome.PASS)


_ORDER = list(Outcome)
_BY_PROBLEM: dict[ProblemKind, Outcome] = {"disagree": Outcome.DISAGREE,
                                           "expectation": Outcome.FAIL,
                                           "splat": Outcome.SPLAT}


def worst(outcomes: Iterable[Outcome]) -> Outcome:
    return max(outcomes, key=_ORDER.index, default=Outcome.PASS)


@dataclass(frozen=True)
class Side:
    """One side's view after a step: its answer, each device's domain and group type."""
    rc: int | None
    guard: bool
    states: Mapping[str, str]
    types: Mapping[str, str]


@dataclass(frozen=True)
class StepResult:
    index: int
    label: str
    kind: str
    kernel: Side
    model: Side
    model_warn: str = ""  # the model says the kernel WARNs here, in this function
    model_fault: bool = False  # the model says the IOMMU reports a DMA fault here
    also: tuple[int | None, ...] = ()  # the answer under each --also-profile model
    events: tuple[str, ...] = ()  # signatures of the kernel events the step logged
    expected_events: tuple[str, ...] = ()  # those the model or the author predicted
    problems: tuple[Problem, ...] = ()
    note: str = ""
    branches: tuple[str, ...] = ()  # the kernel branches the model took (model/branches.py)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def outcome(self) -> Outcome:
        return worst(_BY_PROBLEM[p.kind] for p in self.problems)


@dataclass(frozen=True)
class ScenarioResult:
    scenario: str
    file: str
    platform: str
    kernel: str  # the spec, e.g. debian:6.1
    release: str  # what it resolved to, e.g. 6.1.0-57-amd64
    profile: str
    outcome: Outcome
    duration: float = 0.0
    steps: tuple[StepResult, ...] = ()
    kernel_resolved: Mapping[str, str | None] = field(default_factory=dict)
    profile_assumed: bool = False
    profile_note: str = ""
    also_profiles: tuple[str, ...] = ()
    detail: str = ""  # why it was skipped, or the fatal event
    console_log: str = ""  # the guest's full console log
    kernel_log: str = ""  # the kernel log records of this scenario

    @property
    def ok(self) -> bool:
        return not self.outcome.failed

    @property
    def cell(self) -> tuple[str, str]:
        """Where the run sits in the matrix: (platform, kernel spec)."""
        return self.platform, self.kernel


def outcome_of(steps: Sequence[StepResult]) -> Outcome:
    return worst(s.outcome for s in steps)


# ------------------------------------------------------------------------------------ JSON

def to_json(result: ScenarioResult) -> dict[str, Any]:
    def side(s: Side) -> dict[str, Any]:
        return {"rc": s.rc, "guard": s.guard, "states": dict(s.states), "types": dict(s.types)}

    return {
        "scenario": result.scenario, "file": result.file, "platform": result.platform,
        "kernel": result.kernel, "release": result.release,
        "kernel_resolved": dict(result.kernel_resolved), "profile": result.profile,
        "profile_assumed": result.profile_assumed, "profile_note": result.profile_note,
        "also_profiles": list(result.also_profiles), "outcome": result.outcome.value,
        "ok": result.ok, "duration": round(result.duration, 3), "detail": result.detail,
        "console_log": result.console_log, "kernel_log": result.kernel_log,
        "steps": [{"index": s.index, "label": s.label, "kind": s.kind, "note": s.note,
                   "outcome": s.outcome.value, "kernel": side(s.kernel), "model": side(s.model),
                   "model_warn": s.model_warn, "model_fault": s.model_fault,
                   "also": list(s.also), "events": list(s.events),
                   "expected_events": list(s.expected_events),
                   "problems": [{"kind": p.kind, "text": p.text} for p in s.problems],
                   "branches": list(s.branches)}
                  for s in result.steps]}


def from_json(doc: Mapping[str, Any]) -> ScenarioResult:
    def side(d: Mapping[str, Any]) -> Side:
        return Side(d["rc"], bool(d["guard"]), dict(d["states"]), dict(d["types"]))

    steps = tuple(StepResult(
        index=s["index"], label=s["label"], kind=s["kind"], note=s.get("note", ""),
        kernel=side(s["kernel"]), model=side(s["model"]), model_warn=s["model_warn"],
        model_fault=s["model_fault"], also=tuple(s["also"]), events=tuple(s["events"]),
        expected_events=tuple(s["expected_events"]),
        problems=tuple(Problem(p["kind"], p["text"]) for p in s["problems"]),
        branches=tuple(s.get("branches", ())))
        for s in doc["steps"])
    return ScenarioResult(
        scenario=doc["scenario"], file=doc["file"], platform=doc["platform"],
        kernel=doc["kernel"], release=doc["release"], profile=doc["profile"],
        outcome=Outcome(doc["outcome"]), duration=float(doc["duration"]), steps=steps,
        kernel_resolved=dict(doc["kernel_resolved"]), profile_assumed=doc["profile_assumed"],
        profile_note=doc["profile_note"], also_profiles=tuple(doc["also_profiles"]),
        detail=doc["detail"], console_log=doc["console_log"], kernel_log=doc["kernel_log"])


@dataclass(frozen=True)
class RunResults:
    """Everything one run (or a merge of shards) produced."""
    runs: tuple[ScenarioResult, ...]
    started: str = ""
    finished: str = ""
    host: Mapping[str, str] = field(default_factory=dict)
    shards: tuple[str, ...] = ()  # "I/N" of each shard merged in

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)


def host_facts() -> dict[str, str]:
    """The machine a run came from, so that its durations can be read."""
    return {"node": host_platform.node(), "machine": host_platform.machine(),
            "cpus": str(os.cpu_count() or 0), "python": host_platform.python_version(),
            "debian": Path("/etc/debian_version").read_text().strip()
            if Path("/etc/debian_version").exists() else ""}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def results_json(results: RunResults) -> dict[str, Any]:
    return {"schema": SCHEMA, "tool": "iommu-harness", "ok": results.ok,
            "started": results.started, "finished": results.finished,
            "host": dict(results.host), "shards": list(results.shards),
            "coverage": coverage_json(coverage(results.runs)),
            "runs": [to_json(r) for r in results.runs]}


def write_results(results: RunResults, path: Path) -> None:
    path.write_text(json.dumps(results_json(results), indent=1) + "\n")


def load_results(path: Path) -> RunResults:
    """A results.json file, or the folder holding one."""
    file = path / RESULTS_FILE if path.is_dir() else path
    try:
        doc = json.loads(file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read results {file}: {exc.strerror}",
                          "pass the output folder of an 'iommu-harness run'") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file} is not JSON: {exc}", "pass a results.json a run wrote") \
            from exc
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ConfigError(f"{file}: not an iommu-harness results file of schema {SCHEMA}",
                          "rerun the shard with this version of the harness")
    return RunResults(tuple(from_json(r) for r in doc["runs"]), doc.get("started", ""),
                      doc.get("finished", ""), doc.get("host", {}),
                      tuple(doc.get("shards", [])))


def ordered(runs: Iterable[ScenarioResult]) -> tuple[ScenarioResult, ...]:
    """Matrix order, whichever shard ran what: platforms as ``--platform all`` runs them
    (x86_64 first), then kernel specs, then scenario files."""
    by_file = sorted(runs, key=lambda r: (r.kernel, r.file, r.scenario))
    return tuple(sorted(by_file, key=lambda r: r.platform, reverse=True))


def merge(parts: Sequence[RunResults]) -> RunResults:
    """Shards' results as one run: every scenario run once, in matrix order."""
    runs = ordered(r for p in parts for r in p.runs)
    seen: set[tuple[str, str, str, str]] = set()
    for r in runs:
        key = (r.platform, r.kernel, r.scenario, r.file)
        if key in seen:
            raise ConfigError(f"{r.scenario} on {r.platform} {r.kernel} is in two of the "
                              "merged results", "merge each shard's folder once")
        seen.add(key)
    starts = [p.started for p in parts if p.started]
    ends = [p.finished for p in parts if p.finished]
    return RunResults(runs, min(starts, default=""), max(ends, default=""),
                      parts[0].host if parts else {},
                      tuple(s for p in parts for s in p.shards))
