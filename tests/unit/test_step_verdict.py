"""The verdict on one scenario step (verdict.judge_step), on recorded kernel events: pure."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from harness.dmesg import Event, classify, parse_records
from harness.steps import (
    ByProfile,
    Checks,
    ModelView,
    Observation,
    Operation,
    Prediction,
    Step,
)
from harness.verdict import FAULT_STEPS_REPORTED, judge_step

LOGS = Path(__file__).parent.parent / "data" / "logs"
STATES = (("edu0", "@d"), ("edu1", "default"))
TYPES = (("edu0", "DMA"), ("edu1", "DMA"))


def events(name: str) -> tuple[Event, ...]:
    return tuple(classify(parse_records((LOGS / name).read_text())))


WARN = events("warn-x86-6.1.kmsg")  # warning:ih_smoke_init
FAULT = events("dma-x86-6.1.kmsg")  # dmar_fault:00:03.0:DMA Write:05


def seen(rc: int | None = 0, guard: bool = False, states: tuple[tuple[str, str], ...] = STATES,
         types: tuple[tuple[str, str], ...] = TYPES,
         evs: tuple[Event, ...] = ()) -> Observation:
    return Observation(rc, guard, states, types, evs)


def model(rc: int | None = 0, guard: bool = False, warn: str = "", fault: bool = False,
          states: tuple[tuple[str, str], ...] = STATES) -> ModelView:
    return ModelView(Prediction(rc, guard, warn, fault), states, TYPES)


STEP = Step(Operation("attach_dev d edu0"))


def kinds(step: Step, observation: Observation, view: ModelView, recent: int = 0,
          profile: str = "linux-6.1") -> list[tuple[str, str]]:
    v = judge_step(step, profile, observation, view, recent)
    return [(p.kind, p.text) for p in v.problems]


def test_agreement_is_no_problem() -> None:
    v = judge_step(STEP, "linux-6.1", seen(), model(), 0)
    assert v.ok and v.problems == () and v.expected_events == () and not v.faulted


def test_a_different_answer_or_guard_is_a_disagreement() -> None:
    assert kinds(STEP, seen(-errno.EBUSY), model(0)) == [("disagree", "kernel EBUSY, model 0")]
    assert kinds(STEP, seen(-errno.EBUSY, guard=True), model(-errno.EBUSY)) == \
        [("disagree", "kernel EBUSY (guard), model EBUSY")]


def test_a_different_domain_is_a_disagreement() -> None:
    other = (("edu0", "default"), ("edu1", "default"))
    assert kinds(STEP, seen(), model(states=other)) == \
        [("disagree", "edu0: kernel @d, model default")]


def test_the_authors_checks_are_expectations_per_profile() -> None:
    step = Step(Operation("attach_dev d edu0"), Checks(
        rc=ByProfile(None, (("linux-6.12", -errno.EBUSY),)),
        state=ByProfile((("edu0", "blocked"),)),
        types=ByProfile((), (("linux-6.1", (("edu1", "identity"),)),))))
    assert kinds(step, seen(), model(), profile="linux-6.12") == [
        ("expectation", "expected EBUSY, kernel gave 0"),
        ("expectation", "expected edu0 on blocked, kernel has @d")]
    assert kinds(step, seen(), model(), profile="linux-6.1") == [
        ("expectation", "expected edu0 on blocked, kernel has @d"),
        ("expectation", "expected edu1 type identity, kernel has DMA")]


def test_an_unpredicted_warn_is_a_splat() -> None:
    assert kinds(STEP, seen(evs=WARN), model()) == \
        [("splat", "unexpected kernel warning: warning:ih_smoke_init")]


def test_a_predicted_warn_must_appear_and_is_then_expected() -> None:
    v = judge_step(STEP, "linux-6.1", seen(evs=WARN), model(warn="ih_smoke_init"), 0)
    assert v.ok and v.expected_events == ("warning:ih_smoke_init",)
    assert kinds(STEP, seen(), model(warn="ih_smoke_init")) == \
        [("disagree", "expected event 'warning:ih_smoke_init' did not appear")]


def test_an_event_the_author_expects_must_appear() -> None:
    step = Step(Operation("dma edu0 d 0x100000 0x100"),
                Checks(events=ByProfile(("dmar_fault",))))
    assert kinds(step, seen(), model()) == \
        [("expectation", "expected event 'dmar_fault' did not appear")]


def test_faults_against_the_model_and_the_rate_limit() -> None:
    # An unpredicted fault disagrees; a predicted one must show, unless the rate limit
    # may have swallowed it (a faulting step just before).
    assert kinds(STEP, seen(evs=FAULT), model()) == \
        [("disagree", "unexpected DMA fault: dmar_fault:00:03.0:DMA Write:05")]
    assert kinds(STEP, seen(), model(fault=True)) == \
        [("disagree", "the model predicts a DMA fault; the kernel reported none")]
    assert kinds(STEP, seen(), model(fault=True), recent=FAULT_STEPS_REPORTED) == []
    v = judge_step(STEP, "linux-6.1", seen(evs=FAULT), model(fault=True), 0)
    assert v.ok and v.faulted
    assert judge_step(STEP, "linux-6.1", seen(evs=FAULT), model(), 0).faulted


@pytest.mark.parametrize("profile", ["linux-6.1", "linux-6.12", "linux-7.2"])
def test_an_observe_step_has_no_answer_on_either_side(profile: str) -> None:
    assert kinds(STEP, seen(None), model(None), profile=profile) == []
