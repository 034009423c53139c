"""Findings, the validate diff and the bisect verdicts, on recorded results (no QEMU)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.bisect import first_bad, spec_from_json, spec_json
from harness.compare import (
    EXIT_FOR,
    bisect_verdict,
    diff_json,
    diff_runs,
    findings,
    format_diff,
    pick_signature,
)
from harness.results import Outcome, RunResults, ScenarioResult, load_results
from harness.treerun import TreeRun
from harness.verdict import Problem

RECORDED = Path(__file__).parent.parent / "data" / "results" / "recorded.json"


@pytest.fixture(scope="module")
def recorded() -> RunResults:
    return load_results(RECORDED)


def one_kernel(results: RunResults, kernel: str) -> RunResults:
    return RunResults(tuple(r for r in results.runs if r.kernel == kernel))


def by_name(results: RunResults, platform: str, fragment: str) -> ScenarioResult:
    return next(r for r in results.runs if r.platform == platform and fragment in r.scenario)


def replaced(results: RunResults, old: ScenarioResult, new: ScenarioResult) -> RunResults:
    return RunResults(tuple(new if r is old else r for r in results.runs))


def passing(run: ScenarioResult) -> ScenarioResult:
    steps = tuple(dataclasses.replace(s, problems=()) for s in run.steps)
    return dataclasses.replace(run, steps=steps, outcome=Outcome.PASS)


def test_findings_name_the_step_and_the_kernels_answer(recorded: RunResults) -> None:
    names = [f.signature for f in findings(one_kernel(recorded, "debian:6.1"))]
    assert ("x86_64-vtd: tegra-like shared domain over one shared group step 2 attach_dev t "
            "edu2: disagree: kernel returned -22") in names
    assert all("pass" not in n for n in names)
    # a step with three disagreeing fields is one finding, not three
    assert len(names) == len(set(names))


def test_a_dead_guest_is_a_finding(recorded: RunResults) -> None:
    names = [f.signature for f in findings(one_kernel(recorded, "debian:7.2"))]
    assert len(names) == 1 and ": died: " in names[0]


def test_an_unexpected_event_is_a_finding_an_expected_one_is_not(recorded: RunResults) -> None:
    base = one_kernel(recorded, "debian:6.12")
    run = by_name(base, "x86_64-vtd", "WARN paths")
    assert not findings(RunResults((run,)))  # its WARNs are declared
    step = dataclasses.replace(run.steps[2], expected_events=(),
                               problems=(Problem("splat", "WARN nobody predicted"),))
    splat = dataclasses.replace(run, steps=(*run.steps[:2], step, *run.steps[3:]),
                                outcome=Outcome.SPLAT)
    names = [f.signature for f in findings(RunResults((splat,)))]
    assert names == [f"x86_64-vtd: {run.scenario} step {step.index} {step.label}: splat: "
                     "warning:iommu_detach_device"]


def test_identical_runs_do_not_differ(recorded: RunResults) -> None:
    base = one_kernel(recorded, "debian:6.1")
    diff = diff_runs(base, base)
    assert not diff.changed and not diff.worse
    assert format_diff(diff).endswith("verdict: no change")


def test_a_scenario_that_newly_fails_is_worse(recorded: RunResults) -> None:
    patched = one_kernel(recorded, "debian:6.1")
    tegra = by_name(patched, "x86_64-vtd", "tegra")
    base = replaced(patched, tegra, passing(tegra))
    diff = diff_runs(base, patched)
    assert diff.worse
    assert diff.newly_failing == (("x86_64-vtd", tegra.scenario, Outcome.PASS,
                                   Outcome.DISAGREE),)
    assert len(diff.new_findings) == 3 and not diff.gone_findings
    text = format_diff(diff)
    assert "newly failing (1):" in text and "verdict: WORSE" in text
    assert diff_json(diff)["worse"] is True
    back = diff_runs(patched, base)  # the other way round: a fix, nothing worse
    assert not back.worse and back.changed and back.newly_passing


def test_a_scenario_missing_on_the_patched_side_is_worse(recorded: RunResults) -> None:
    base = one_kernel(recorded, "debian:6.1")
    patched = RunResults(base.runs[1:])
    diff = diff_runs(base, patched)
    assert diff.worse and diff.missing == ((base.runs[0].platform, base.runs[0].scenario),)


def test_new_kernel_log_signatures_are_reported(recorded: RunResults) -> None:
    base = one_kernel(recorded, "debian:6.1")
    patched = one_kernel(recorded, "debian:6.12")
    diff = diff_runs(base, patched)
    assert "x86_64-vtd: warning:__iommu_release_dma_ownership" in diff.new_events
    assert "x86_64-vtd: warning:iommu_group_release_dma_owner" in diff.gone_events
    assert diff.base_profiles["x86_64-vtd"] != diff.patched_profiles["x86_64-vtd"] or \
        "profiles on x86_64-vtd" in format_diff(diff)


# ------------------------------------------------------------------------------- bisect

@pytest.fixture(scope="module")
def bad_and_good(recorded: RunResults) -> tuple[RunResults, RunResults, str]:
    bad = one_kernel(recorded, "debian:6.1")
    tegra = by_name(bad, "x86_64-vtd", "tegra")
    good = replaced(bad, tegra, passing(tegra))
    signature = pick_signature(bad, good)
    assert signature is not None
    return bad, good, signature


def test_the_signature_is_the_bad_commits_first_new_finding(
        bad_and_good: tuple[RunResults, RunResults, str]) -> None:
    bad, good, signature = bad_and_good
    assert signature == findings(bad)[0].signature
    assert "step 2 attach_dev t edu2" in signature
    assert pick_signature(good, good) is None


def test_bisect_verdicts(bad_and_good: tuple[RunResults, RunResults, str]) -> None:
    bad, good, signature = bad_and_good
    baseline = [f.signature for f in findings(good)]
    assert bisect_verdict([bad], signature, baseline)[0] == "bad"
    assert bisect_verdict([good], signature, baseline)[0] == "good"
    # any of the repeats showing it makes the commit bad (a flaky failure)
    assert bisect_verdict([good, good, bad], signature, baseline)[0] == "bad"
    # a run that could not be made (the guest did not boot) is a skip, never bad
    assert bisect_verdict([None], signature, baseline) == ("skip", "the run could not be made")
    assert bisect_verdict([good, None], signature, baseline)[0] == "skip"
    # another failure, not in the good commit's baseline: skip
    verdict, why = bisect_verdict([bad], "x86_64-vtd: something else: died: x", baseline)
    assert (verdict, why) == ("skip", f"another failure: {signature}")
    # what the good commit already showed does not make a commit bad or skipped
    assert bisect_verdict([bad], "nothing", [f.signature for f in findings(bad)])[0] == "good"


def test_exit_codes_git_bisect_reads() -> None:
    assert EXIT_FOR == {"good": 0, "bad": 1, "skip": 125}


def test_first_bad_from_git_output() -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    out = f"running 'x'\nBisecting: 0 revisions left\n{sha} is the first bad commit\ncommit {sha}"
    assert first_bad(out) == sha
    assert first_bad("There are only 'skip'ped commits left to test.\n") is None


def test_the_step_spec_round_trips() -> None:
    spec = TreeRun(platforms=("x86_64-vtd",), scenarios=(Path("/a.toml"),),
                   kconfig=("debug",), accel="tcg", snapshot=False, quiet=True)
    assert spec_from_json(spec_json(spec)) == spec
