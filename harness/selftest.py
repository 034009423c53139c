"""``iommu-harness selftest``: the kernel's own selftests, built from the tree under test and
run inside our guests, one result per test, each judged with our kernel-log verdict.

The tree is built once with the fragments of every suite asked for (``iommufd-test``,
``vfio-test``); each suite (harness/selftest_suites.py) compiles its programs statically against
that build's ``headers_install`` and gets a guest of its own topology with them in its image.
Results go to the run's reports (results.json, junit.xml, report.html), a test per row.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from . import hostcmd
from .dmesg import Record
from .errors import ConfigError
from .guest import Guest, GuestConfig
from .kbuild import source_kernel
from .ktap import (
    TestResult,
    exit_status,
    parse_ktap,
    records_by_test,
    run_wrapper,
    splats,
)
from .platforms import PLATFORMS
from .prepare import GuestRequest, kernel_record, out_root, prepare
from .reports import write_reports
from .results import Outcome, RunResults, ScenarioResult, host_facts, now
from .selftest_suites import KSFT_SKIP, SUITES, Invocation, Program, Suite, suite
from .srctree import check_tree
from .topology import device_bdf

EXIT_OK, EXIT_FAILED = 0, 1


def add_selftest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", required=True, type=Path, metavar="DIR",
                   help="a kernel source tree")
    p.add_argument("--suite", action="append", choices=SUITES, metavar="SUITE",
                   help="iommufd (tools/testing/selftests/iommu, the default) or vfio "
                        "(tools/testing/selftests/vfio, 6.18+); repeatable")
    p.add_argument("--platform", default="x86_64-vtd", choices=sorted(PLATFORMS),
                   help="x86_64-vtd (the default), or aarch64-smmuv3 for the vfio suite "
                        "(arm64 7.x cannot select IOMMUFD_TEST)")
    p.add_argument("--test", action="append", default=[], metavar="FIXTURE.VARIANT.TEST",
                   help="run only these tests (repeatable; kselftest's -r)")
    p.add_argument("--timeout", type=float, default=1800.0, metavar="SECONDS",
                   help="for each suite's guest")
    p.add_argument("--out", type=Path, help="output folder (default: ./out/selftest-<time>)")
    p.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))


def device_names(help_text: str) -> set[str]:
    """The device names in QEMU's ``-device help`` output (pure)."""
    return set(re.findall(r'^name "([^"]+)"', help_text, re.MULTILINE))


def qemu_devices(binary: str) -> set[str]:
    """The device names a QEMU binary offers."""
    return device_names(hostcmd.run([binary, "-nodefaults", "-machine", "none", "-device",
                                     "help"], what=f"{binary} -device help", timeout=60))


def qemu_version(binary: str) -> str:
    return hostcmd.run([binary, "--version"], what=f"{binary} --version").split("\n")[0]


def judge_test(result: TestResult, events: list[str]) -> tuple[Outcome, str]:
    """A test's outcome: its own verdict, made worse by a splat it caused (pure)."""
    if result.status == "skip":
        return Outcome.SKIPPED, result.reason
    if events:
        return Outcome.SPLAT, f"the kernel logged {', '.join(events)}"
    if result.status == "fail":
        said = [ln.lstrip("# ").strip() for ln in result.output[1:-1]
                if ln.strip() and not ln.lstrip("# ").startswith(("RUN", "OK", "FAIL"))]
        return Outcome.FAIL, result.reason or " | ".join(said[-3:]) or "the test failed"
    return Outcome.PASS, ""


def cmd_selftest(args: argparse.Namespace) -> int:
    platform = PLATFORMS[args.platform]
    suites = [suite(n) for n in dict.fromkeys(args.suite or ["iommufd"])]
    for s in suites:
        s.check_platform(platform)
    tree = check_tree(args.kernel)
    for s in suites:
        s.check_tree(tree)
    devices = qemu_devices(platform.qemu_binary)
    version = qemu_version(platform.qemu_binary)
    for s in suites:
        if line := s.notice(devices, version):
            print(f"iommu-harness: {line}", file=sys.stderr)
    fragments = tuple(s.kconfig for s in suites)
    kernel = source_kernel(str(tree), platform, fragments)
    for s in suites:
        option, wanted = s.required
        if kernel.config().get(option) not in (wanted, "y"):
            raise ConfigError(f"the kernel tree {tree} cannot build {option[7:]} (the {s.name} "
                              "selftest needs it)",
                              "use a newer tree; the line above names what it dropped")
    out = (args.out or out_root() / f"selftest-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    started, runs = now(), []
    for s in suites:
        programs = s.build(tree, platform, fragments)
        request = GuestRequest(platform=platform.name, kernel=str(tree), accel=args.accel,
                               out_root=out / "guests", kconfig=fragments,
                               topology=s.topology(devices),
                               extra_files=tuple((p.guest_path, p.host) for p in programs))
        runs += _run_suite(prepare(request), s, programs, args, kernel_record(kernel))
    results = RunResults(tuple(runs), started, now(), host_facts())
    page = write_reports(results, out)
    counts = {o: sum(1 for r in runs if r.outcome is o) for o in Outcome}
    print(f"{len(runs)} tests: " + ", ".join(f"{n} {o}" for o, n in counts.items() if n))
    for r in runs:
        if r.outcome.failed:
            print(f"  {r.outcome}: {r.scenario}: {r.detail}")
    print(f"report: {page}")
    return EXIT_FAILED if not results.ok else EXIT_OK


def _run_suite(config: GuestConfig, s: Suite, programs: Sequence[Program],
               args: argparse.Namespace, record: dict[str, str | None]
               ) -> list[ScenarioResult]:
    head = ScenarioResult(scenario="", file=f"selftest:{s.name}", platform=config.platform.name,
                          kernel=str(args.kernel), release=config.kernel.release, profile="-",
                          outcome=Outcome.PASS, kernel_resolved=record)
    if s.memory_mb and s.memory_mb > config.platform.memory_mb:
        config = replace(config, platform=replace(config.platform, memory_mb=s.memory_mb))
    topo = config.topology
    deadline = time.monotonic() + args.timeout
    runs: list[ScenarioResult] = []
    with Guest(config) as guest:
        for command in s.setup_commands(topo):
            guest.check(command)
        if s.driver:
            for d in topo.devices:
                guest.bind(device_bdf(topo, d), s.driver)
        ids = {device_bdf(topo, d): d.id for d in topo.devices}
        sriov = [ids[b] for b in guest.check(
            f"for b in {' '.join(ids)}; do [ ! -e /sys/bus/pci/devices/$b/sriov_totalvfs ] "
            "|| echo $b; done").split()]
        console = str(guest.console_log)
        head = replace(head, console_log=console)
        for inv in s.invocations(programs, topo, args.test, sriov):
            if inv.skip:
                runs.append(replace(head, scenario=f"{inv.label}: {inv.program.name}",
                                    outcome=Outcome.SKIPPED, detail=inv.skip))
                continue
            runs += _run_program(guest, inv, head, deadline, bool(args.test))
    took = sum(r.duration for r in runs)
    print(f"{s.name}: {len(runs)} results in {took:.0f} s", file=sys.stderr)
    return runs


def _run_program(guest: Guest, inv: Invocation, head: ScenarioResult, deadline: float,
                 filtered: bool) -> list[ScenarioResult]:
    """One program in the guest: a result per test it ran, judged with the kernel log cut at
    its RUN lines; a result for the program where it ran no test or the kernel complained
    outside its tests."""
    mark = guest.kmsg_mark()
    began = time.monotonic()
    output = guest.run(run_wrapper(inv.command),
                       timeout=max(60.0, deadline - time.monotonic())).text
    took = time.monotonic() - began
    records = guest.kmsg_since(mark.seq)
    (guest.config.out_dir / f"{inv.label.replace(' ', '-')}-{inv.program.name}.txt"
     ).write_text(output)
    by_test = records_by_test(records)
    tests = parse_ktap(output)
    runs = [_test_result(head, inv, t, by_test.get(t.name, []), took / len(tests))
            for t in tests]
    own = {id(r) for recs in by_test.values() for r in recs}
    outside = [e.signature for e in splats(r for r in records if id(r) not in own)]
    program = replace(head, scenario=f"{inv.label}: {inv.program.name}", duration=took,
                      kernel_log="\n".join(r.text for r in records if id(r) not in own))
    status = exit_status(output)
    if outside:
        runs.append(replace(program, outcome=Outcome.SPLAT,
                            detail=f"outside its tests the kernel logged {', '.join(outside)}"))
    elif not tests:
        runs.append(_program_result(program, status, output, filtered))
    return runs


def _test_result(head: ScenarioResult, inv: Invocation, t: TestResult, records: Sequence[Record],
                 duration: float) -> ScenarioResult:
    outcome, detail = judge_test(t, [e.signature for e in splats(records)])
    return replace(head, scenario=f"{inv.label}: {t.name}", outcome=outcome, detail=detail,
                   duration=duration, kernel_log="\n".join(r.text for r in records))


def _program_result(program: ScenarioResult, status: int | None, output: str,
                    filtered: bool) -> ScenarioResult:
    """A program that ran no test: it skipped as a whole, matched none of ``--test``, or
    failed before its first test (pure)."""
    said = [ln for ln in output.strip().splitlines() if not ln.startswith("ih-selftest-exit")]
    tail = " | ".join(said[-3:]) or "no output"
    if status == KSFT_SKIP:
        return replace(program, outcome=Outcome.SKIPPED, detail=tail)
    if status == 0 and filtered:
        return replace(program, outcome=Outcome.SKIPPED, detail="no test of it matched --test")
    why = "it never finished" if status is None else f"it exited {status} before any test"
    return replace(program, outcome=Outcome.FAIL, detail=f"{why}: {tail}")
