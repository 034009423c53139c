"""Running scenarios: one on a guest (:func:`run_scenario`, the library call behind the CLI, the
pytest tests and the reports), and a list of them on as many fresh guests as crashes demand."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from .differ import Differ, kernel_profile
from .dmesg import format_records
from .errors import GuestDied, GuestHung
from .fuzz import Fuzz, run_fuzz
from .guest import Guest
from .model import Profile
from .model.profiles import ProfileChoice
from .prepare import GuestRequest, kernel_record, prepare
from .results import Outcome, ScenarioResult, outcome_of
from .scenario import Scenario


def head(guest: Guest, scenario: Scenario | Fuzz, choice: ProfileChoice,
         extra: Sequence[Profile]) -> ScenarioResult:
    """What every result of ``scenario`` on this guest records, before it runs."""
    kernel = guest.config.kernel
    return ScenarioResult(
        scenario=scenario.name, file=str(scenario.path), platform=guest.config.platform.name,
        kernel=kernel.spec, release=kernel.release, profile=choice.profile.name,
        outcome=Outcome.PASS, kernel_resolved=kernel_record(kernel),
        profile_assumed=choice.assumed, profile_note=choice.note,
        also_profiles=tuple(p.name for p in extra), console_log=str(guest.console_log))


def died(guest: Guest, scenario: Scenario | Fuzz, choice: ProfileChoice,
         extra: Sequence[Profile], exc: GuestDied | GuestHung) -> ScenarioResult:
    """The kernel under test crashed or hung during ``scenario``: it failed, not the harness;
    its record names the fatal event and keeps the console's tail."""
    return replace(head(guest, scenario, choice, extra), outcome=Outcome.DIED, detail=exc.problem,
                   kernel_log=guest.console_tail())


def skip_reason(scenario: Scenario, platform: str, profile: str) -> str:
    """Why a scenario does not run here ("" when it does)."""
    if scenario.profiles and profile not in scenario.profiles:
        return f"profile {profile} not in {list(scenario.profiles)}"
    if scenario.platforms and platform not in scenario.platforms:
        return f"platform {platform} not in {list(scenario.platforms)}"
    return ""


def run_scenario(guest: Guest, scenario: Scenario | Fuzz, choice: ProfileChoice | None = None,
                 extra: Sequence[Profile] = ()) -> ScenarioResult:
    """Run a scenario (or a fuzzing run) on a guest and on the model of ``choice`` (default:
    the kernel's profile), with the answers of ``extra`` profiles beside. A guest that dies or
    hangs fails the scenario with the fatal event (outcome DIED); the caller needs a fresh
    guest then."""
    choice = choice or kernel_profile(guest.config.kernel)
    start = head(guest, scenario, choice, extra)
    if isinstance(scenario, Fuzz):
        try:
            return run_fuzz(guest, scenario, choice, extra, start)
        except (GuestDied, GuestHung) as exc:
            return died(guest, scenario, choice, extra, exc)
    reason = skip_reason(scenario, start.platform, choice.profile.name)
    if reason:
        return replace(start, outcome=Outcome.SKIPPED, detail=reason)
    started = time.monotonic()
    try:
        mark = guest.kmsg_mark()
        differ = Differ(guest, scenario.topology, choice.profile, extra)
        differ.setup(scenario)
        steps = tuple(differ.step(i + 1, s) for i, s in enumerate(scenario.steps))
        log = format_records(guest.kmsg_since(mark.seq))
    except (GuestDied, GuestHung) as exc:
        return replace(died(guest, scenario, choice, extra, exc),
                       duration=time.monotonic() - started)
    return replace(start, outcome=outcome_of(steps), steps=steps, kernel_log=log,
                   duration=time.monotonic() - started)


Listener = Callable[[ScenarioResult], None]


def run_on_guests(request: GuestRequest, scenarios: Sequence[Scenario | Fuzz],
                  choice: ProfileChoice | None = None, extra: Sequence[Profile] = (),
                  on_boot: Callable[[Guest, ProfileChoice], None] | None = None,
                  on_result: Listener | None = None) -> list[ScenarioResult]:
    """Run scenarios (of one topology) in order on a fresh guest; when one kills the guest,
    the rest run on another fresh guest."""
    results: list[ScenarioResult] = []
    pending = list(scenarios)
    while pending:
        config = prepare(request)
        with Guest(config) as guest:
            used = choice or kernel_profile(config.kernel)
            if on_boot is not None:
                on_boot(guest, used)
            while pending:
                scenario = pending.pop(0)
                try:
                    result = run_scenario(guest, scenario, used, extra)
                except (GuestDied, GuestHung) as exc:  # outside the scenario's own steps
                    result = died(guest, scenario, used, extra, exc)
                results.append(result)
                if on_result is not None:
                    on_result(result)
                if result.outcome is Outcome.DIED or not guest.alive:
                    break
    return results

