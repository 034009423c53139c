"""The ih_attach result protocol (pure)."""

from __future__ import annotations

import shlex

import pytest

from harness.attach import CTL, ResultParseError, batch_script, parse_results


def test_results_parse_rc_guard_and_fields() -> None:
    text = ("alloc 0 type=1\nattach_dev -22\nfree -16 guard=1 why=attached_or_mapped\n\n"
            "state 0 group=2 domain=@d type=1 driver=ih_edu_owned\n")
    r = parse_results(text)
    assert [x.op for x in r] == ["alloc", "attach_dev", "free", "state"]
    assert [x.rc for x in r] == [0, -22, -16, 0]
    assert r[1].errno_name == "EINVAL" and not r[1].guard
    assert r[2].guard and r[2].get("why") == "attached_or_mapped"
    assert r[3].get("domain") == "@d" and r[0].errno_name == "0"


@pytest.mark.parametrize("bad", ["alloc", "alloc zero", "? x"])
def test_malformed_results_are_errors(bad: str) -> None:
    with pytest.raises(ResultParseError):
        parse_results(bad)


def test_batch_script_quotes_every_line() -> None:
    lines = ["state 0000:00:03.0", "weird 'quote' $(rm -rf /)", ""]
    script = batch_script(lines)
    words = shlex.split(script)
    assert words[:2] == ["printf", "%s\\n"]
    assert words[2:5] == lines
    assert script.endswith(f"> {CTL} && cat {CTL}")
