"""``iommu-harness selftest``: the kernel's own iommufd selftest, built from the tree under test
and run inside our guest, one result per test, each judged with our kernel-log verdict.

The kernel is the tree built with the ``iommufd-test`` fragment (IOMMUFD_TEST: the mock
domains and devices the selftest drives); the selftest is tools/testing/selftests/iommu/
iommufd.c compiled statically against the build's own ``headers_install``, and put into the
guest's image. Results go to the run's reports (results.json, junit.xml, report.html), a test
per row. x86_64 only: on arm64 7.x IOMMUFD_TEST cannot be selected (the generic page tables it
needs are only selectable with COMPILE_TEST).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

from . import cache, hostcmd
from .errors import ConfigError
from .guest import Guest, GuestConfig
from .kbuild import BuildPlan, SourceBuild, source_kernel
from .kfragments import fragment_files
from .ktap import TestResult, parse_ktap, records_by_test, run_wrapper, splats
from .platforms import PLATFORMS, Platform
from .prepare import GuestRequest, kernel_record, out_root, prepare
from .reports import write_reports
from .results import Outcome, RunResults, ScenarioResult, host_facts, now
from .srctree import check_tree, tree_state

SELFTEST = "tools/testing/selftests/iommu/iommufd.c"
GUEST_PATH = "/bin/iommufd-selftest"
# Huge pages reserved before the run: the 128M dirty-tracking tests map 128 MiB of them
# (2 MiB pages on x86_64); the guest has 512 MiB.
HUGEPAGES = 96
FILE = "selftest:iommufd"
EXIT_OK, EXIT_FAILED = 0, 1


def add_selftest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", required=True, type=Path, metavar="DIR",
                   help="a kernel source tree with tools/testing/selftests/iommu")
    p.add_argument("--platform", default="x86_64-vtd", choices=["x86_64-vtd"],
                   help="x86_64-vtd (arm64 7.x cannot select IOMMUFD_TEST)")
    p.add_argument("--test", action="append", default=[], metavar="FIXTURE.VARIANT.TEST",
                   help="run only these tests (repeatable; kselftest's -r)")
    p.add_argument("--timeout", type=float, default=1800.0, metavar="SECONDS")
    p.add_argument("--out", type=Path, help="output folder (default: ./out/selftest-<time>)")
    p.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    p.add_argument("--suite", default="iommufd", choices=SUITES,
                   help="iommufd (tools/testing/selftests/iommu, the default) or vfio "
                        "(tools/testing/selftests/vfio: needs QEMU's igb device)")


SUITES = ("iommufd", "vfio")
# tools/testing/selftests/vfio (6.18+) drives a real device through vfio-pci; of QEMU's
# devices its driver library knows igb (QEMU 8.0 and later; Debian 12's QEMU 7.2 lacks it).
VFIO_DEVICE = "igb"


def device_names(help_text: str) -> set[str]:
    """The device names in QEMU's ``-device help`` output (pure)."""
    return set(re.findall(r'^name "([^"]+)"', help_text, re.MULTILINE))


def qemu_devices(binary: str) -> set[str]:
    """The device names a QEMU binary offers."""
    return device_names(hostcmd.run([binary, "-nodefaults", "-machine", "none", "-device",
                                     "help"], what=f"{binary} -device help", timeout=60))


def check_vfio_suite(binary: str) -> None:
    """The VFIO selftests need igb in the guest: one line where QEMU has none."""
    version = hostcmd.run([binary, "--version"], what=f"{binary} --version").split("\n")[0]
    if VFIO_DEVICE not in qemu_devices(binary):
        raise ConfigError(f"{version} has no {VFIO_DEVICE} device: the tree's "
                          "tools/testing/selftests/vfio cannot run in its guests",
                          "use QEMU 8.0 or later (Debian 13's), or --suite iommufd")
    raise ConfigError(f"{version} has {VFIO_DEVICE}, but running the tree's "
                      "tools/testing/selftests/vfio is not built yet",
                      "use --suite iommufd")


def build_selftest(tree: Path, platform: Platform) -> Path:
    """The selftest, static, for the tree's current state (cached by state)."""
    source = tree / SELFTEST
    if not source.is_file():
        raise ConfigError(f"the kernel tree {tree} has no {SELFTEST}",
                          "use a tree of 6.2 or later (iommufd)")
    plan = BuildPlan(tree, platform.arch, tuple(fragment_files(platform.debian_arch,
                                                               ["iommufd-test"])))
    build = SourceBuild(plan)
    entry = cache.cache_root() / "selftests" / f"{plan.key}-{tree_state(tree).key}"
    entry.parent.mkdir(parents=True, exist_ok=True)

    def make(tmp: Path) -> None:
        build.headers()
        hostcmd.run(["gcc", "-static", "-O2", "-Wall", "-Wno-unused-function", "-D_GNU_SOURCE",
                     "-isystem", str(build.obj / "usr" / "include"),
                     "-I", str(tree / "tools" / "testing" / "selftests"),
                     "-o", str(tmp / "iommufd"), str(source), "-lcap", "-lpthread"],
                    what=f"building {SELFTEST}", timeout=600)

    return cache.ensure_dir(entry, make) / "iommufd"


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
    if args.suite == "vfio":
        check_vfio_suite(platform.qemu_binary)
    tree = check_tree(args.kernel)
    kernel = source_kernel(str(tree), platform, ("iommufd-test",))
    if kernel.config().get("CONFIG_IOMMUFD_TEST") != "y":
        raise ConfigError(f"the kernel tree {tree} cannot build IOMMUFD_TEST",
                          "use a tree of 6.2 or later; the line above names what it dropped")
    binary = build_selftest(tree, platform)
    out = (args.out or out_root() / f"selftest-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    request = GuestRequest(platform=platform.name, kernel=str(tree), accel=args.accel,
                           out_root=out / "guests", kconfig=("iommufd-test",),
                           extra_files=((GUEST_PATH, binary),))
    started = now()
    runs = _run(prepare(request), args, kernel_record(kernel))
    results = RunResults(tuple(runs), started, now(), host_facts())
    page = write_reports(results, out)
    counts = {o: sum(1 for r in runs if r.outcome is o) for o in Outcome}
    print(f"{len(runs)} tests: " + ", ".join(f"{n} {o}" for o, n in counts.items() if n))
    for r in runs:
        if r.outcome.failed:
            print(f"  {r.outcome}: {r.scenario}: {r.detail}")
    print(f"report: {page}")
    return EXIT_FAILED if not results.ok else EXIT_OK


def _run(config: GuestConfig, args: argparse.Namespace, record: dict[str, str | None]
         ) -> list[ScenarioResult]:
    kernel = config.kernel
    head = ScenarioResult(scenario="", file=FILE, platform=config.platform.name,
                          kernel=str(args.kernel), release=kernel.release, profile="-",
                          outcome=Outcome.PASS, kernel_resolved=record)
    command = GUEST_PATH + "".join(f" -r {t}" for t in args.test)
    with Guest(config) as guest:
        mark = guest.kmsg_mark()
        began = time.monotonic()
        guest.check(f"echo {HUGEPAGES} > /proc/sys/vm/nr_hugepages")
        output = guest.run(run_wrapper(command), timeout=args.timeout).text
        took = time.monotonic() - began
        by_test = records_by_test(guest.kmsg_since(mark.seq))
        console = str(guest.console_log)
    (config.out_dir / "selftest-output.txt").write_text(output)
    tests = parse_ktap(output)
    if not tests:
        tail = " | ".join(output.strip().splitlines()[-3:])
        raise ConfigError(f"the selftest printed no results: {tail}", f"see {console}")
    runs = []
    for t in tests:
        records = by_test.get(t.name, [])
        events = [e.signature for e in splats(records)]
        outcome, detail = judge_test(t, events)
        runs.append(replace(head, scenario=f"iommufd: {t.name}", outcome=outcome,
                            detail=detail, duration=took / len(tests),
                            kernel_log="\n".join(r.text for r in records),
                            console_log=console))
    print(f"{len(tests)} tests ran in {took:.0f} s", file=sys.stderr)
    return runs
