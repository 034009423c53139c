"""Rule coverage: every kernel branch of the model has an id and a source, the model's code
takes only registered branches, and the scenarios take every branch of every profile."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.coverage import coverage, format_coverage
from harness.dryrun import dry_run
from harness.model import PROFILES
from harness.model.branches import BRANCHES, BY_ID, applicable, missed
from harness.platforms import PLATFORMS
from harness.results import load_results
from harness.scenario import load_scenario

MODEL = Path(__file__).parent.parent.parent / "harness" / "model"
TESTS = Path(__file__).parent.parent
# The catalogue, and the scenario the integration tests run on a fresh guest of their own.
SCENARIOS = [*sorted((TESTS / "scenarios").glob("*.toml")),
             TESTS / "integration" / "group-birth-at-probe.toml"]


def test_every_branch_has_a_unique_id_and_a_source() -> None:
    assert len(BY_ID) == len(BRANCHES)
    assert all(re.fullmatch(r"[a-z_]+\.[a-z_]+", b.id) and b.source and b.what
               for b in BRANCHES)


def test_the_model_takes_exactly_the_registered_branches() -> None:
    used = set()
    for path in MODEL.glob("*.py"):
        used |= set(re.findall(r'\bhit\("([a-z_.]+)"', path.read_text()))
    used |= {b for b in re.findall(r'branch = "([a-z_.]+)"',
                                   "".join(p.read_text() for p in MODEL.glob("*.py")))}
    assert used == set(BY_ID)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_scenarios_take_every_branch_of_the_profile(profile: str) -> None:
    # Each branch applicable on some platform is taken by some scenario on such a platform:
    # a rule that no scenario reaches could change in the kernel and nobody would notice.
    prof = PROFILES[profile]
    left = {b.id for p in PLATFORMS.values() for b in applicable(prof, p.groups_need_driver)}
    for platform in PLATFORMS.values():
        for path in SCENARIOS:
            s = load_scenario(path, platform)
            if (s.platforms and platform.name not in s.platforms) or \
                    (s.profiles and profile not in s.profiles):
                continue
            left -= set(dry_run(s, platform, prof).hits)
    assert not left, f"no scenario takes {sorted(left)} under {profile}"


def test_missed_branches_are_the_applicable_ones_not_taken() -> None:
    prof = PROFILES["linux-6.1"]
    assert {b.id for b in missed(prof, False, ["attach.ok"])} == \
        {b.id for b in applicable(prof, False)} - {"attach.ok"}
    # SMMUv3 adds the groupless branches and 6.1's unfinalised page table.
    extra = {b.id for b in applicable(prof, True)} - {b.id for b in applicable(prof, False)}
    assert {"attach_dev.no_group", "map.unfinalised", "probe.group_birth"} <= extra


def test_a_runs_coverage_is_per_profile() -> None:
    results = load_results(TESTS / "data" / "results" / "recorded.json")
    cov = {c.profile: c for c in coverage(results.runs)}
    assert set(cov) == {r.profile for r in results.runs}
    for c in cov.values():
        taken = {b for r in results.runs if r.profile == c.profile for s in r.steps
                 for b in s.branches}
        assert set(c.taken) == taken & set(BY_ID) and not taken & {b.id for b in c.missed}
    text = format_coverage(list(cov.values()))
    assert "rule coverage linux-6.1 (x86_64-vtd, aarch64-smmuv3): " in text
    assert "never: " in text  # a few scenarios do not take every branch
