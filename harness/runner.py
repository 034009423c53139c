"""Running scenarios: one on a guest (:func:`run_scenario`, the library call behind the CLI, the
pytest tests and the reports), and a list of them on as many fresh guests as crashes demand."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from .differ import Differ, kernel_profile, set_up
from .dmesg import format_records
from .errors import GuestDied, GuestHung
from .fuzz import Fuzz, run_fuzz, templates_for
from .guest import Guest, GuestConfig
from .model import Profile
from .model.profiles import ProfileChoice
from .prepare import GuestRequest, kernel_record, prepare
from .results import Outcome, ScenarioResult, outcome_of
from .scenario import Scenario


def pristine(config: GuestConfig, label: str) -> Guest:
    """A guest of its own for one scenario or fuzzing sequence (not started: a context
    manager): restored from the config's saved state, or booted when snapshots are off. Its
    logs go to a subfolder ``label`` of the config's folder."""
    return Guest(replace(config, out_dir=config.out_dir / label))


def head(config: GuestConfig, scenario: Scenario | Fuzz, choice: ProfileChoice,
         extra: Sequence[Profile], console_log: Path | None = None) -> ScenarioResult:
    """What every result of ``scenario`` on guests of ``config`` records, before it runs."""
    kernel = config.kernel
    return ScenarioResult(
        scenario=scenario.name, file=str(scenario.path), platform=config.platform.name,
        kernel=kernel.spec, release=kernel.release, profile=choice.profile.name,
        outcome=Outcome.PASS, kernel_resolved=kernel_record(kernel),
        profile_assumed=choice.assumed, profile_note=choice.note,
        also_profiles=tuple(p.name for p in extra),
        console_log=str(console_log or config.out_dir / "console.log"))


def died(guest: Guest, scenario: Scenario | Fuzz, choice: ProfileChoice,
         extra: Sequence[Profile], exc: GuestDied | GuestHung) -> ScenarioResult:
    """The kernel under test crashed or hung during ``scenario``: it failed, not the harness;
    its record names the fatal event and keeps the console's tail."""
    return replace(head(guest.config, scenario, choice, extra, guest.console_log),
                   outcome=Outcome.DIED, detail=exc.problem, kernel_log=guest.console_tail())


def skip_reason(scenario: Scenario, platform: str, profile: str,
                config: Mapping[str, str] | None = None) -> str:
    """Why a scenario does not run here ("" when it does); ``config``: the kernel's."""
    if scenario.profiles and profile not in scenario.profiles:
        return f"profile {profile} not in {list(scenario.profiles)}"
    if scenario.platforms and platform not in scenario.platforms:
        return f"platform {platform} not in {list(scenario.platforms)}"
    missing = scenario.missing_config(config) if config is not None else []
    if missing:
        return (f"the kernel lacks CONFIG_{', CONFIG_'.join(missing)} (a source tree built "
                "by --kernel DIR has them)")
    return ""


def run_scenario(guest: Guest, scenario: Scenario, choice: ProfileChoice | None = None,
                 extra: Sequence[Profile] = ()) -> ScenarioResult:
    """Run a scenario on a pristine guest (see :func:`pristine`) and on the model of
    ``choice`` (default: the kernel's profile), with the answers of ``extra`` profiles beside.
    A guest that dies or hangs fails the scenario with the fatal event (outcome DIED)."""
    choice = choice or kernel_profile(guest.config.kernel)
    start = head(guest.config, scenario, choice, extra, guest.console_log)
    reason = skip_reason(scenario, start.platform, choice.profile.name,
                         guest.config.kernel.config())
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
    """Run scenarios (of one topology), each on a pristine guest of its own (a fuzzing run:
    one per sequence); ``on_boot`` hears of the first guest started."""
    config = prepare(request)
    used = choice or kernel_profile(config.kernel)
    results: list[ScenarioResult] = []
    told = False

    def started(guest: Guest) -> None:
        nonlocal told
        if on_boot is not None and not told:
            on_boot(guest, used)
        told = True

    for n, scenario in enumerate(scenarios, start=1):
        label = f"{n:02d}-{_slug(scenario.name)}"
        if isinstance(scenario, Fuzz):
            # Its many sequences share one set-up: their guests are saved set up.
            fuzz_config = replace(config, ready=(*config.ready, set_up(scenario.base)))
            fuzz = replace(scenario, templates=templates_for(config.kernel.config()))
            result = run_fuzz(partial(_sequence_guest, fuzz_config, label), fuzz, used,
                              extra, head(config, fuzz, used, extra), started)
        else:
            result = _one(pristine(config, label), scenario, used, extra, started)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name).strip("-")[:60]


def _sequence_guest(config: GuestConfig, label: str, k: int) -> Guest:
    return pristine(config, f"{label}-{k:03d}")


def _one(guest: Guest, scenario: Scenario, used: ProfileChoice, extra: Sequence[Profile],
         started: Callable[[Guest], None]) -> ScenarioResult:
    if reason := skip_reason(scenario, guest.config.platform.name, used.profile.name,
                             guest.config.kernel.config()):
        return replace(head(guest.config, scenario, used, extra), outcome=Outcome.SKIPPED,
                       detail=reason)
    with guest:
        started(guest)
        try:
            return run_scenario(guest, scenario, used, extra)
        except (GuestDied, GuestHung) as exc:  # outside the scenario's own steps
            return died(guest, scenario, used, extra, exc)
