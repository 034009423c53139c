"""The selftest's KTAP output and the kernel log cut per test (harness/ktap.py), and a test's
verdict (harness/selftest.judge_test)."""

from __future__ import annotations

import subprocess

from harness.dmesg import Record
from harness.ktap import (
    MARKER,
    exit_status,
    parse_ktap,
    records_by_test,
    run_wrapper,
    splats,
)
from harness.results import Outcome
from harness.selftest import device_names, judge_test
from harness.selftest_suites import VFIO_DEVICE_WITH_DRIVER

# The shape kselftest_harness.h prints (tools/testing/selftests/kselftest_harness.h:
# __run_test and the KTAP header), three tests of the iommufd selftest.
KTAP = """TAP version 13
1..3
# Starting 3 tests from 2 test cases.
#  RUN           iommufd.simple_close ...
#            OK  iommufd.simple_close
ok 1 iommufd.simple_close
#  RUN           iommufd_ioas.mock_domain.ioas_area_auto_destroy ...
# iommufd.c:123:ioas_area_auto_destroy:Expected 0 (0) == ret (-12)
# ioas_area_auto_destroy: Test terminated by assertion
#          FAIL  iommufd_ioas.mock_domain.ioas_area_auto_destroy
not ok 2 iommufd_ioas.mock_domain.ioas_area_auto_destroy
#  RUN           iommufd.hugepages ...
#      SKIP      no hugepages
#            OK  iommufd.hugepages
ok 3 iommufd.hugepages # SKIP no hugepages
# FAILED: 1 / 3 tests passed.
# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0
"""


def test_one_result_per_test_with_its_lines() -> None:
    results = parse_ktap(KTAP)
    assert [(r.name, r.status, r.reason) for r in results] == [
        ("iommufd.simple_close", "pass", ""),
        ("iommufd_ioas.mock_domain.ioas_area_auto_destroy", "fail", ""),
        ("iommufd.hugepages", "skip", "no hugepages")]
    assert results[1].output[0].startswith("#  RUN") and "Expected 0" in results[1].output[1]


def test_the_kernel_log_is_cut_at_the_markers() -> None:
    records = [Record("before anything"),
               Record(f"{MARKER}iommufd.simple_close ..."),
               Record("iommufd: something"),
               Record(f"{MARKER}iommufd.hugepages ..."),
               Record("WARNING: CPU: 0 PID: 9 at drivers/iommu/iommufd/io_pagetable.c:10 "
                      "iopt_unmap+0x1/0x2"),
               Record("---[ end trace 0000000000000000 ]---")]
    cut = records_by_test(records)
    assert [r.text for r in cut["iommufd.simple_close"]] == ["iommufd: something"]
    assert [e.kind for e in splats(cut["iommufd.hugepages"])] == ["warning"]
    assert not splats(cut["iommufd.simple_close"])


def test_a_test_that_passes_but_warns_fails() -> None:
    ok, skipped, failed = parse_ktap(KTAP)[0], parse_ktap(KTAP)[2], parse_ktap(KTAP)[1]
    assert judge_test(ok, []) == (Outcome.PASS, "")
    assert judge_test(ok, ["warning:iopt_unmap"])[0] is Outcome.SPLAT
    assert judge_test(skipped, ["warning:x"]) == (Outcome.SKIPPED, "no hugepages")
    assert judge_test(failed, [])[0] is Outcome.FAIL


def test_the_wrapper_marks_each_test_and_keeps_the_output() -> None:
    """Run under busybox sh with a fake selftest: the output passes through unchanged and
    every RUN line would be marked (written to a file here instead of /dev/kmsg)."""
    script = run_wrapper("printf '%s\\n' '#  RUN           a.b ...' 'ok 1 a.b'").replace(
        "/dev/kmsg", "/dev/stderr")
    r = subprocess.run(["busybox", "sh", "-c", script], capture_output=True, text=True,
                       check=True)
    assert r.stdout == "#  RUN           a.b ...\nok 1 a.b\nih-selftest-exit: 0\n"
    assert exit_status(r.stdout) == 0
    assert r.stderr.startswith(MARKER) and r.stderr.split()[1:] == ["a.b", "..."]


def test_qemus_device_list_is_read_for_igb() -> None:
    text = ('Network devices:\nname "e1000e", bus PCI, desc "Intel 82574L GbE Controller"\n'
            'name "igb", bus PCI, desc "Intel 82576 Gigabit Ethernet Controller"\n'
            'Misc devices:\nname "edu", bus PCI\n')
    assert device_names(text) == {"e1000e", "igb", "edu"}
    assert VFIO_DEVICE_WITH_DRIVER not in device_names(text.replace('"igb"', '"igbvf"'))
