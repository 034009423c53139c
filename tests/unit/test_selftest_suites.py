"""The selftest suites (harness/selftest_suites.py): which programs run where, with what, and
what a program that ran no test counts as (harness/selftest._program_result)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.ktap import exit_status, run_wrapper
from harness.platforms import AARCH64_SMMUV3, X86_64_VTD
from harness.results import Outcome, ScenarioResult
from harness.selftest import _program_result
from harness.selftest_suites import (
    KSFT_SKIP,
    SRIOV_PROGRAM,
    IommufdSuite,
    Program,
    VfioSuite,
    make_toolchain,
    suite,
)
from harness.topology import load_topology

PROGRAMS = [Program("vfio", n, Path(f"/cache/{n}")) for n in
            ("vfio_dma_mapping_test", SRIOV_PROGRAM)]


def test_each_vfio_program_runs_on_each_device_with_its_address() -> None:
    s = VfioSuite()
    topo = load_topology(s.topology({"edu", "igb"}), X86_64_VTD)
    runs = s.invocations(PROGRAMS, topo, ["a.b.c"], sriov=["igb0"])
    assert [(r.label, r.program.name) for r in runs] == [
        ("vfio edu0", "vfio_dma_mapping_test"), ("vfio edu0", SRIOV_PROGRAM),
        ("vfio igb0", "vfio_dma_mapping_test"), ("vfio igb0", SRIOV_PROGRAM)]
    assert runs[0].command == ("VFIO_SELFTESTS_BDF=0000:00:03.0 "
                               "/bin/selftests/vfio/vfio_dma_mapping_test -r a.b.c")
    assert runs[2].command.startswith("VFIO_SELFTESTS_BDF=0000:00:05.0 ")
    # SR-IOV only where the device has the capability; the others are not started
    assert runs[1].skip == "edu0 (edu) has no SR-IOV capability" and not runs[3].skip


def test_without_igb_the_vfio_suite_is_edu_alone_and_says_so() -> None:
    s = VfioSuite()
    topo = load_topology(s.topology({"edu"}), X86_64_VTD)
    assert [d.id for d in topo.devices] == ["edu0"]
    line = s.notice({"edu"}, "QEMU emulator version 7.2.22")
    assert line.startswith("QEMU emulator version 7.2.22 has no igb device") and "\n" not in line
    assert s.notice({"edu", "igb"}, "QEMU emulator version 10.0.0") == ""


def test_the_iommufd_suite_runs_its_one_program_with_the_test_filter() -> None:
    s = suite("iommufd")
    topo = load_topology(s.topology(set()), X86_64_VTD)
    (run,) = s.invocations([Program("iommufd", "iommufd", Path("/x"))], topo,
                           ["iommufd.simple_close", "it's"], sriov=[])
    assert run.command == "/bin/selftests/iommufd/iommufd -r iommufd.simple_close -r 'it'\"'\"'s'"
    assert run.label == "iommufd" and not run.skip
    assert isinstance(s, IommufdSuite) and s.kconfig == "iommufd-test"


def test_a_suite_refuses_a_platform_and_a_tree_it_cannot_run_on(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not run on aarch64-smmuv3"):
        IommufdSuite().check_platform(AARCH64_SMMUV3)
    with pytest.raises(ConfigError, match=r"no tools/testing/selftests/vfio/Makefile.*6\.18"):
        VfioSuite().check_tree(tmp_path)
    with pytest.raises(ConfigError, match=r"iommufd\.c.*6\.2 or later"):
        IommufdSuite().check_tree(tmp_path)


def test_the_vfio_suite_builds_natively_or_with_the_cross_compiler(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    assert make_toolchain("x86_64", "x86_64") == ["CC=gcc", "ARCH=x86_64",
                                                  "LDFLAGS=-static -pthread"]
    monkeypatch.setattr("harness.selftest_suites.cross_uuid_root", lambda arch: tmp_path)
    cross = make_toolchain("aarch64", "x86_64")
    assert cross[:2] == ["CC=aarch64-linux-gnu-gcc", "ARCH=arm64"]
    assert f"-L{tmp_path}/usr/lib/aarch64-linux-gnu" in cross[3]
    VfioSuite().check_platform(AARCH64_SMMUV3)  # runs there, unlike iommufd's


HEAD = ScenarioResult(scenario="vfio edu0: p", file="selftest:vfio", platform="x86_64-vtd",
                      kernel="/src", release="7.3.4", profile="-", outcome=Outcome.PASS)


@pytest.mark.parametrize(("status", "filtered", "outcome", "needle"), [
    (KSFT_SKIP, False, Outcome.SKIPPED, "No driver found"),
    (0, True, Outcome.SKIPPED, "matched --test"),
    (0, False, Outcome.FAIL, "exited 0 before any test"),
    (1, False, Outcome.FAIL, "exited 1 before any test: No driver found"),
    (None, False, Outcome.FAIL, "never finished"),
])
def test_a_program_that_ran_no_test(status: int | None, filtered: bool, outcome: Outcome,
                                    needle: str) -> None:
    output = "No driver found for device 0000:00:03.0\n"
    if status is not None:
        output += f"ih-selftest-exit: {status}\n"
    result = _program_result(HEAD, status, output, filtered)
    assert result.outcome is outcome and needle in result.detail
    assert "ih-selftest-exit" not in result.detail


def test_the_wrapper_reports_the_programs_exit_status() -> None:
    script = run_wrapper("sh -c 'echo skipping; exit 4'").replace("/dev/kmsg", "/dev/null")
    out = subprocess.run(["busybox", "sh", "-c", script], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[0] == "skipping" and exit_status(out) == KSFT_SKIP
    assert exit_status("cut short\n") is None
