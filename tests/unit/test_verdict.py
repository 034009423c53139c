"""Verdicts over events classified from real logs."""

from __future__ import annotations

from harness.dmesg import events_of
from harness.verdict import judge, matches
from tests.conftest import DATA

WARN = events_of((DATA / "logs" / "warn-x86-6.1.kmsg").read_text())
BOOT = events_of((DATA / "logs" / "boot-arm64-6.12.log").read_text())


def test_a_clean_boot_passes() -> None:
    assert judge(BOOT).ok


def test_an_undeclared_warning_fails_and_is_explained() -> None:
    verdict = judge(WARN)
    assert not verdict.ok
    assert [e.signature for e in verdict.unexpected] == ["warning:ih_smoke_init"]
    text = verdict.explain("x86_64-vtd")
    assert "unexpected kernel warning in x86_64-vtd: warning:ih_smoke_init" in text
    assert "---[ end trace" in text


def test_declared_events_pass_by_kind_signature_or_prefix() -> None:
    for pattern in ("warning", "warning:ih_smoke_init"):
        assert judge(WARN, [pattern]).ok
    assert not judge(WARN, ["warning:ih_smoke"]).ok  # a prefix ends at ':' only
    assert judge(WARN, ["iommu_group_add:0000:00:03.0"]).unexpected  # not the warning


def test_a_declared_event_that_does_not_come_fails() -> None:
    verdict = judge(BOOT, ["dmar_fault"])
    assert verdict.missing == ("dmar_fault",)
    assert "expected kernel event 'dmar_fault' did not appear" in verdict.explain()


def test_matches() -> None:
    [warning] = [e for e in WARN if e.kind == "warning"]
    assert matches(warning, "warning") and matches(warning, "warning:ih_smoke_init")
    assert not matches(warning, "panic")
