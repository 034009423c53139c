"""The pytest plugin's own behaviour (pytester, no guest): platform parametrization, its
markers and options checked as usage errors, not silent skips."""

from __future__ import annotations

import pytest


def test_a_test_taking_platform_runs_once_per_platform(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_p(platform):
            assert platform in ("x86_64-vtd", "aarch64-smmuv3")
    """)
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_p?x86_64-vtd? PASSED*", "*test_p?aarch64-smmuv3? PASSED*"])


def test_harness_platform_narrows_and_refuses_unknown_names(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_p(platform):\n    assert platform == 'aarch64-smmuv3'\n")
    pytester.runpytest("--harness-platform", "aarch64-smmuv3").assert_outcomes(passed=1)
    result = pytester.runpytest("--harness-platform", "riscv-iommu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: --harness-platform: unknown ['riscv-iommu']" in result.stderr.str()


def test_harness_platforms_needs_a_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.harness_platforms("x86_64-vtd", reason="VT-d only")
        def test_ok(platform):
            assert platform == "x86_64-vtd"

        @pytest.mark.harness_platforms("x86_64-vtd")
        def test_bad(platform):
            pass
    """)
    result = pytester.runpytest()
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*harness_platforms takes platform names*reason=*"])


def test_harness_expect_with_bad_arguments_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.harness_expect(kind="warning")
        def test_x():
            pass
    """)
    result = pytester.runpytest()
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*harness_expect takes event kinds or signatures*"])


def test_a_test_without_a_guest_gets_no_verdict(pytester: pytest.Pytester) -> None:
    # No guest used: nothing to judge, nothing booted, the session ends clean.
    pytester.makepyfile("def test_x():\n    assert True\n")
    pytester.runpytest().assert_outcomes(passed=1)
