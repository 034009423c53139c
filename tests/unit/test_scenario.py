"""Scenario files: the catalogue parses; each mistake in a file is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.differ import scenario_toml
from harness.errors import ConfigError
from harness.platforms import X86_64_VTD
from harness.scenario import load_scenario, resolve

CATALOGUE = sorted((Path(__file__).parent.parent / "scenarios").glob("*.toml"))


@pytest.mark.parametrize("path", CATALOGUE, ids=[p.stem for p in CATALOGUE])
def test_catalogue_parses(path: Path) -> None:
    s = load_scenario(path, X86_64_VTD)
    assert s.steps and s.name
    assert all(resolve(st.op, s.topology).split()[0] == st.op.split()[0] for st in s.steps
               if st.op)


def test_device_ids_resolve_to_addresses() -> None:
    s = load_scenario(CATALOGUE[0], X86_64_VTD)
    assert resolve("attach_dev d edu2", s.topology) == "attach_dev d 0000:01:01.0"


@pytest.mark.parametrize(("text", "needle"), [
    ("[[step]\n", "not valid TOML"),
    ('colour = 1\n[[step]]\nop = "free d"\n', "unknown key(s) colour"),
    ('name = "x"\n', "no steps"),
    ('[[step]]\nop = "frobnicate d"\n', "unknown operation 'frobnicate d'"),
    ('[[step]]\nop = "free d"\nbind = { edu0 = "owned" }\n', "exactly one of 'op' and 'bind'"),
    ('[[step]]\nbind = { edu9 = "owned" }\n', "unknown device 'edu9'"),
    ('[[step]]\nbind = { edu0 = "vfio" }\n', "unknown driver kind 'vfio'"),
    ('[[step]]\nop = "free d"\nexpect = "ENOPE"\n', "expect 'ENOPE' is not an errno name"),
    ('[[step]]\nop = "free d"\nstate = { edu9 = "@d" }\n', "'state' must map device ids"),
    ('[[step]]\nop = "free d"\nevents = "dmar_fault"\n', "'events' must be a list"),
    ('[[step]]\nop = "free d"\nwhen = 1\n', "step 1: unknown key(s) when"),
    ('topology = "nowhere"\n[[step]]\nop = "free d"\n', "topology 'nowhere' is neither"),
    ('profiles = "linux-6.1"\n[[step]]\nop = "free d"\n', "'profiles' must be a list"),
])
def test_mistakes_are_one_clear_line(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "s.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_scenario(f, X86_64_VTD)
    assert needle in str(info.value)
    assert str(info.value).startswith(f"scenario {f}: ")
    assert "\n" not in str(info.value)


def test_expect_accepts_names_and_numbers(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[[step]]\nop = "free d"\nexpect = "EBUSY"\n[[step]]\nop = "free d"\n'
                 'expect = -22\n[[step]]\nop = "free d"\nexpect = 0\n')
    assert [s.expect for s in load_scenario(f, X86_64_VTD).steps] == [-16, -22, 0]


def test_a_fuzz_reproducer_is_a_loadable_scenario(tmp_path: Path) -> None:
    f = tmp_path / "repro.toml"
    f.write_text(scenario_toml("repro", "default", ["alloc a edu0", "attach_dev a edu2"]))
    s = load_scenario(f, X86_64_VTD)
    assert [st.op for st in s.steps] == ["alloc a edu0", "attach_dev a edu2"]
