"""``iommu-harness run``: the scenario catalogue over platforms × kernels, with progress on the
terminal, a final matrix, and results.json, junit.xml and report.html in its output folder;
``-j N`` runs N shards as child processes and merges them; ``report merge`` joins the output
folders of shards run elsewhere."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .coverage import coverage, format_coverage
from .debian.fetch import resolve_spec
from .errors import ConfigError, HarnessError
from .fuzz import Fuzz, fuzz_bindings
from .guest import Guest
from .kfragments import OPTIONAL
from .matrix import Job, parse_shard, plan, shard
from .model import Profile, get_profile
from .model.profiles import ProfileChoice
from .platforms import PLATFORMS
from .prepare import DEFAULT_TOPOLOGY, GuestRequest, out_root
from .reports import HTML_FILE, format_matrix, format_scenario, write_reports
from .results import (
    RESULTS_FILE,
    RunResults,
    ScenarioResult,
    host_facts,
    load_results,
    merge,
    now,
    ordered,
)
from .runner import run_on_guests
from .scenario import Scenario, load_scenario, topology_file
from .srctree import check_tree
from .topology import load_topology

CATALOGUE = Path(__file__).resolve().parent.parent / "tests" / "scenarios"
DEFAULT_KERNELS = "debian:6.1,debian:6.12,debian:newest"
EXIT_FAILED, EXIT_HARNESS = 1, 2


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--platform", default="all", choices=[*sorted(PLATFORMS), "all"],
                   help="one platform, or all (default)")
    p.add_argument("--kernel", default=DEFAULT_KERNELS, metavar="SPEC,...",
                   help="comma list of kernel specs: debian:<series>, an image file, or a "
                        "kernel source tree DIR (default: %(default)s)")
    p.add_argument("--kconfig", action="append", default=[], metavar="NAME", choices=OPTIONAL,
                   help="an optional configuration fragment for source trees (repeatable): "
                        + ", ".join(OPTIONAL))
    p.add_argument("--scenario", nargs="+", type=Path, metavar="FILE",
                   help="scenario files (default: the catalogue, tests/scenarios/*.toml)")
    p.add_argument("--profile", help="force the model profile (default: from each kernel)")
    p.add_argument("--also-profile", action="append", default=[], metavar="PROFILE",
                   help="show what another profile (e.g. proposal-2022) would return")
    p.add_argument("--out", type=Path, help="output folder (default: "
                                            "$IOMMU_HARNESS_OUT or ./out, then run-<time>)")
    p.add_argument("--fuzz-steps", type=int, default=0, metavar="N",
                   help="after the scenarios, N random operations on each platform and kernel, "
                        "compared step by step (default: 0, none)")
    p.add_argument("--fuzz-seed", type=int, default=0, metavar="S",
                   help="the fuzzer's seed: the same seed draws the same steps (default: 0)")
    p.add_argument("--shard", default="1/1", metavar="I/N",
                   help="run only the I-th of N deterministic slices of the matrix")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="guests at once, each in a child process (default: 1)")
    p.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    p.add_argument("--boot-timeout", type=float, default=90.0, metavar="SECONDS")
    p.add_argument("--no-snapshot", action="store_true",
                   help="boot a guest for every scenario instead of restoring a saved one")
    p.add_argument("--part", default="1/1", help=argparse.SUPPRESS)  # a -j child's slice


def scenario_files(chosen: Sequence[Path] | None) -> list[Path]:
    """``--scenario`` files, else the catalogue."""
    files = list(chosen or sorted(CATALOGUE.glob("*.toml")))
    if not files:
        raise ConfigError(f"no scenario files in {CATALOGUE}", "pass --scenario FILE...")
    return files


def _platforms(args: argparse.Namespace) -> list[str]:
    return sorted(PLATFORMS, reverse=True) if args.platform == "all" else [args.platform]


def _kernels(args: argparse.Namespace) -> list[str]:
    specs = [k.strip() for k in str(args.kernel).split(",") if k.strip()]
    if not specs:
        raise ConfigError("--kernel names no kernel", "write e.g. --kernel debian:6.1,debian:6.12")
    return list(dict.fromkeys(specs))


def check_inputs(args: argparse.Namespace) -> list[Job]:
    """Everything that can be known wrong before a guest boots: the scenario files on each
    platform, the kernel specs, the profiles, the shard; then the jobs this process runs."""
    platforms, kernels, files = _platforms(args), _kernels(args), scenario_files(args.scenario)
    for name in (args.profile, *args.also_profile):
        if name:
            get_profile(name)
    triples = []
    for p in platforms:
        for f in files:
            triples.append((p, f, topology_file(load_scenario(f, PLATFORMS[p]))))
    for spec in kernels:
        for p in platforms:
            if spec.startswith("debian:"):
                resolve_spec(spec, PLATFORMS[p].debian_arch)
            elif Path(spec).expanduser().is_dir():
                check_tree(Path(spec))
            elif not Path(spec).is_file():
                raise ConfigError(f"kernel {spec!r} is neither a debian: spec, a file nor a "
                                  "kernel tree", "run 'iommu-harness kernels' for the specs")
    if args.fuzz_steps < 0:
        raise ConfigError(f"--fuzz-steps {args.fuzz_steps} is negative", "write 0 or more")
    jobs = plan(platforms, kernels, triples, args.fuzz_steps, DEFAULT_TOPOLOGY)
    i, n = parse_shard(args.shard)
    k, j = parse_shard(args.part)
    return shard(shard(jobs, i, n), k, j)


def _say(args: argparse.Namespace, text: str) -> None:
    tag = f"[{args.part}] " if args.part != "1/1" else ""
    print(f"{tag}{text}", flush=True)


def _run_job(args: argparse.Namespace, job: Job, out: Path,
             extra: Sequence[Profile]) -> list[ScenarioResult]:
    platform = PLATFORMS[job.platform]
    scenarios: list[Scenario | Fuzz] = [load_scenario(f, platform) for f in job.scenarios]
    if job.fuzz_steps:
        topology = load_topology(job.topology, platform)
        base = Scenario(name="fuzz", path=job.topology, topology=topology, steps=(),
                        bind=fuzz_bindings([d.id for d in topology.devices]),
                        topology_path=job.topology)
        scenarios.append(Fuzz(base, job.fuzz_steps, args.fuzz_seed))
    request = GuestRequest(platform=job.platform, kernel=job.kernel, topology=job.topology,
                           accel=args.accel, out_root=out / "guests",
                           boot_timeout=args.boot_timeout, snapshot=not args.no_snapshot,
                           kconfig=tuple(args.kconfig))
    choice = ProfileChoice(get_profile(args.profile)) if args.profile else None
    where = f"{job.platform} {job.kernel}"
    _say(args, f"{where}: preparing the kernel, modules and image")
    started = time.monotonic()

    def booted(guest: Guest, used: ProfileChoice) -> None:
        how = "restored" if guest.started_from == "restore" else "booted"
        _say(args, f"{where}: {guest.config.kernel.release} {how} in "
                   f"{time.monotonic() - started:.1f} s; model {used.profile.name}"
                   f"{' (assumed: ' + used.note + ')' if used.assumed else ''}")

    def done(r: ScenarioResult) -> None:
        _say(args, f"{where}: {r.outcome.value:<8} {r.scenario} ({r.duration:.1f} s)"
                   f"{' - ' + r.detail.splitlines()[0] if r.detail and r.outcome.failed else ''}")

    return run_on_guests(request, scenarios, choice, extra, on_boot=booted, on_result=done)


def cmd_run(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise ConfigError(f"-j {args.jobs} is not a number of guests", "write -j 1 or more")
    jobs = check_inputs(args)
    out = args.out or out_root() / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.jobs > 1:
        return _run_children(args, out)
    extra = [get_profile(p) for p in args.also_profile]
    started, runs, code = now(), [], 0
    for job in jobs:
        try:
            runs += _run_job(args, job, out, extra)
        except HarnessError as exc:  # e.g. a kernel that cannot boot at all: the others run
            print(f"iommu-harness: error: {job.platform} {job.kernel}: {exc}", file=sys.stderr)
            code = exc.exit_code
    results = RunResults(ordered(runs), started, now(), host_facts(),
                         (args.shard,) if args.shard != "1/1" else ())
    page = write_reports(results, out)
    if args.part == "1/1":
        _summary(results, page)
    return code or (0 if results.ok else EXIT_FAILED)


def _child_argv(args: argparse.Namespace, part: int, out: Path) -> list[str]:
    argv = [sys.executable, "-m", "harness.cli", "run", "--platform", args.platform,
            "--kernel", args.kernel, "--shard", args.shard, "--part", f"{part}/{args.jobs}",
            "--out", str(out), "--accel", args.accel, "--boot-timeout", str(args.boot_timeout),
            "--fuzz-steps", str(args.fuzz_steps), "--fuzz-seed", str(args.fuzz_seed)]
    if args.scenario:
        argv += ["--scenario", *map(str, args.scenario)]
    if args.profile:
        argv += ["--profile", args.profile]
    if args.no_snapshot:
        argv.append("--no-snapshot")
    for p in args.also_profile:
        argv += ["--also-profile", p]
    for name in args.kconfig:
        argv += ["--kconfig", name]
    return argv


def _run_children(args: argparse.Namespace, out: Path) -> int:
    """-j N: N child processes, one guest each at a time, each a slice of this shard; then
    their output folders merged into ``out``."""
    parts = [out / "parts" / str(k) for k in range(1, args.jobs + 1)]
    children = [subprocess.Popen(_child_argv(args, k, part))
                for k, part in enumerate(parts, start=1)]
    try:
        codes = [c.wait() for c in children]
    finally:
        for c in children:  # Ctrl-C or SIGTERM: the children stop their guests and exit
            if c.poll() is None:
                c.terminate()
        for c in children:
            c.wait()
    found = [load_results(p) for p in parts if (p / RESULTS_FILE).is_file()]
    results = merge(found)
    results = RunResults(results.runs, results.started, results.finished, results.host,
                         (args.shard,) if args.shard != "1/1" else ())
    page = write_reports(results, out)
    _summary(results, page)
    if any(c == EXIT_HARNESS for c in codes) or len(found) < len(parts):
        return EXIT_HARNESS
    return 0 if results.ok and not any(codes) else EXIT_FAILED


def cmd_report_merge(args: argparse.Namespace) -> int:
    results = merge([load_results(d) for d in args.dirs])
    page = write_reports(results, args.out)
    _summary(results, page)
    return 0 if results.ok else EXIT_FAILED


def _summary(results: RunResults, page: Path) -> None:
    """The end of a run on the terminal: the matrix, rule coverage, where the page is."""
    print("\n" + format_matrix(results.runs))
    covered = format_coverage(coverage(results.runs))
    if covered:
        print(covered)
    print(f"report: {page}")


def print_scenario(result: ScenarioResult) -> None:
    print(format_scenario(result), flush=True)


__all__ = ["HTML_FILE", "add_run_arguments", "cmd_report_merge", "cmd_run", "print_scenario"]
