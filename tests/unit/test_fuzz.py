"""The run's fuzzer (harness/fuzz.py): its draws, pure."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from harness.fuzz import SETUP, TEMPLATES, fuzz_bindings, scenario_toml, sequences
from harness.matrix import plan
from harness.platforms import AARCH64_SMMUV3, X86_64_VTD
from harness.scenario import load_scenario

DEVICES = ["edu0", "edu1", "edu2", "edu3"]


def test_the_same_seed_draws_the_same_steps() -> None:
    assert sequences(7, 100, DEVICES) == sequences(7, 100, DEVICES)
    assert sequences(7, 100, DEVICES) != sequences(8, 100, DEVICES)


def test_the_steps_add_up_and_each_sequence_starts_with_the_set_up() -> None:
    seqs = sequences(0, 250, DEVICES)
    assert sum(len(s) - len(SETUP) for s in seqs) == 250
    assert all(s[:2] == ["alloc a edu0", "alloc b edu1"] and len(s) <= 27 for s in seqs)


def test_every_operation_is_drawn_and_every_draw_is_a_valid_step(tmp_path: Path) -> None:
    seqs = sequences(0, 2000, DEVICES)
    drawn = Counter(line.split()[0] for s in seqs for line in s[2:])
    assert set(drawn) == {t.split()[0] for t in TEMPLATES}
    # A reproducer of any sequence is a scenario file that loads on both platforms.
    f = tmp_path / "repro.toml"
    for s in seqs[:40]:
        f.write_text(scenario_toml("repro", "default", s, fuzz_bindings(DEVICES)))
        for platform in (X86_64_VTD, AARCH64_SMMUV3):
            assert [st.label for st in load_scenario(f, platform).steps] == s


def test_fuzzing_goes_to_the_default_topologys_job() -> None:
    default, other = Path("default.toml"), Path("other.toml")
    jobs = plan(["x86_64-vtd"], ["debian:6.1"], [("x86_64-vtd", Path("a.toml"), other)],
                fuzz_steps=50, fuzz_topology=default)
    assert [(j.topology, j.scenarios, j.fuzz_steps) for j in jobs] == [
        (other, (Path("a.toml"),), 0), (default, (), 50)]
