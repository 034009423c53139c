"""The ``iommu-harness`` command line: every error becomes one line and an exit code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import shlex
import signal
import sys
import termios
import time
import tty
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

import paramiko

from .accel import ACCELS
from .bisect import add_bisect_arguments, add_step_arguments, cmd_bisect, cmd_bisect_step
from .debian.apt import kernel_index
from .debian.index import format_kernels, resolve_all
from .differ import kernel_profile
from .errors import ConfigError, HarnessError
from .guest import Guest
from .kfragments import OPTIONAL
from .model import get_profile
from .model.build import groups_at_probe
from .model.profiles import ProfileChoice
from .model.rules import format_diff, format_profiles, format_rules
from .platforms import PLATFORMS
from .prepare import DEFAULT_TOPOLOGY, GuestRequest, kernel_record, prepare
from .reports import format_scenario
from .results import RunResults, ScenarioResult, host_facts, now, results_json
from .runcmd import add_run_arguments, cmd_report_merge, cmd_run
from .runner import run_on_guests
from .scenario import Scenario, load_scenario, topology_file
from .selftest import add_selftest_arguments, cmd_selftest
from .sysfs import compare_groups, comparison_json, format_comparison, side_by_side
from .topology import predict_groups
from .validate import add_validate_arguments, cmd_validate

EXIT_MISMATCH = 1
EXIT_HARNESS = 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--platform", default="x86_64-vtd", choices=[*sorted(PLATFORMS), "all"],
                   help="emulated machine and IOMMU, or all of them one after the other, "
                        "results side by side (default: %(default)s)")
    p.add_argument("--kernel", default="debian:6.1",
                   help="debian:<series> (6.1, 6.12, 7.2, 7.3, ...), debian:newest, debian:rc, "
                        "the path of a kernel image, or a kernel source tree DIR, built in the "
                        "cache (default: %(default)s; "
                        "'iommu-harness kernels' lists the specs)")
    p.add_argument("--kconfig", action="append", default=[], metavar="NAME",
                   choices=OPTIONAL,
                   help="an optional configuration fragment for a --kernel DIR source tree "
                        "(repeatable): " + ", ".join(OPTIONAL))
    p.add_argument("--headers", type=Path, help="kbuild tree of a --kernel PATH image")
    p.add_argument("--modules", type=Path, help="lib/modules/<release> of a --kernel PATH image")
    p.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY,
                   help="topology TOML file (default: the built-in two-singletons-and-a-bridge)")
    p.add_argument("--accel", default="auto", choices=ACCELS,
                   help="auto uses KVM only once a probe proved it works (default: auto)")
    p.add_argument("--out", type=Path, help="output folder for logs (default: $IOMMU_HARNESS_OUT "
                                            "or ./out)")
    p.add_argument("--boot-timeout", type=float, default=90.0, metavar="SECONDS")
    p.add_argument("--no-snapshot", action="store_true",
                   help="boot every guest instead of restoring a saved one (also "
                        "$IOMMU_HARNESS_NO_SNAPSHOT=1)")
    p.add_argument("-v", "--verbose", action="store_true", help="log the QEMU command line")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iommu-harness",
        description="Boot QEMU guests with an emulated IOMMU and test the kernel's attach APIs.")
    sub = parser.add_subparsers(dest="command", required=True)
    boot = sub.add_parser("boot", help="boot a guest, run CMD in it, exit with CMD's exit code")
    _common(boot)
    boot.add_argument("--timeout", type=float, default=300.0, help="CMD's timeout in seconds")
    boot.add_argument("--ssh", action="store_true", help="run CMD over SSH, not the console")
    boot.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    groups = sub.add_parser("groups", help="print the guest's IOMMU groups beside the prediction")
    _common(groups)
    groups.add_argument("--json", action="store_true", help="machine-readable output")
    groups.add_argument("--bind", metavar="DRIVER",
                        help="bind every test device to DRIVER first (e.g. pci-stub): on SMMUv3 "
                             "a device has a group only once a driver probed it")
    shell = sub.add_parser("shell", help="an interactive shell in a fresh guest (over SSH)")
    _common(shell)
    scen = sub.add_parser("scenario", help="run scenario files on a guest and on the model, "
                                           "side by side")
    _common(scen)
    scen.add_argument("files", nargs="+", type=Path, metavar="FILE")
    scen.add_argument("--json", action="store_true", help="machine-readable output")
    scen.add_argument("--profile", help="force the model profile (default: from the kernel)")
    scen.add_argument("--also-profile", action="append", default=[], metavar="PROFILE",
                      help="show what another profile (e.g. proposal-2022) would return")
    profiles = sub.add_parser("profiles", help="the model's profiles; --diff A B: the rules in "
                                               "which two differ, with their sources")
    profiles.add_argument("--diff", nargs=2, metavar=("A", "B"), help="two profile names")
    profiles.add_argument("--show", metavar="PROFILE", help="every rule of one profile")
    run = sub.add_parser("run", help="the scenario catalogue over platforms x kernels: a "
                                      "matrix, results.json, junit.xml and report.html")
    add_run_arguments(run)
    report = sub.add_parser("report", help="reports from results: merge shards' output folders")
    report_sub = report.add_subparsers(dest="report_command", required=True)
    merge = report_sub.add_parser("merge", help="join the output folders of shards into one "
                                                "report")
    merge.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    merge.add_argument("--out", type=Path, required=True, help="folder for the merged report")
    validate = sub.add_parser("validate", help="apply a patch series in a throwaway worktree, "
                                               "run base and patched, report what changed")
    add_validate_arguments(validate)
    bisect = sub.add_parser("bisect", help="git bisect run over a kernel repository for the "
                                           "first commit that shows a failure")
    add_bisect_arguments(bisect)
    selftest = sub.add_parser("selftest", help="the kernel's own selftests (iommufd, VFIO) "
                                               "from a source tree, in guests, a result per "
                                               "test")
    add_selftest_arguments(selftest)
    step = sub.add_parser("bisect-step", help=argparse.SUPPRESS)  # what git bisect run runs
    add_step_arguments(step)
    kernels = sub.add_parser("kernels", help="the Debian kernel specs and what each resolves "
                                             "to right now")
    kernels.add_argument("--refresh", action="store_true",
                         help="fetch Debian's lists now, whatever their age")
    kernels.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def cmd_profiles(args: argparse.Namespace) -> int:
    if args.diff:
        print(format_diff(get_profile(args.diff[0]), get_profile(args.diff[1])))
    elif args.show:
        print(format_rules(get_profile(args.show)))
    else:
        print(format_profiles())
    return 0


def cmd_kernels(args: argparse.Namespace) -> int:
    resolved = resolve_all(kernel_index(force=args.refresh))
    if args.json:
        print(json.dumps({spec: {arch: k.to_json() for arch, k in per_arch.items()}
                          for spec, per_arch in resolved}, indent=2))
    else:
        print(format_kernels(resolved))
    return 0


def _platforms(args: argparse.Namespace) -> list[str]:
    return sorted(PLATFORMS, reverse=True) if args.platform == "all" else [args.platform]


def _request(args: argparse.Namespace, platform: str) -> GuestRequest:
    return GuestRequest(platform=platform, kernel=args.kernel, topology=args.topology,
                        accel=args.accel, headers=args.headers, modules=args.modules,
                        out_root=args.out, boot_timeout=args.boot_timeout,
                        snapshot=not args.no_snapshot, kconfig=tuple(args.kconfig))


def command_line(words: Sequence[str]) -> str:
    """``boot -- CMD...``: one word is a shell command line as it is (``-- 'a; b'``); several
    are an argv, each word kept whole (``-- sh -c 'exit 7'``), as ``docker exec`` takes them."""
    return words[0] if len(words) == 1 else shlex.join(words)


def cmd_boot(args: argparse.Namespace) -> int:
    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    platforms = _platforms(args)
    codes = []
    for name in platforms:
        config = prepare(_request(args, name))
        started = time.monotonic()
        with Guest(config) as guest:
            ready = time.monotonic() - started
            if not command:
                print(f"{config.platform.name} {config.kernel.describe()} ({config.accel}): "
                      f"control shell ready in {ready:.2f}s "
                      f"({'restored' if guest.started_from == 'restore' else 'booted'}); "
                      f"logs in {guest.out_dir}")
                codes.append(0)
                continue
            line = command_line(command)
            if args.ssh:
                assert guest.ssh is not None
                result = guest.ssh.run(line, timeout=args.timeout)
            else:
                result = guest.run(line, timeout=args.timeout)  # a death names its cause
        if len(platforms) > 1:
            print(f"== {config.platform.name} ({config.kernel.release}): exit {result.exit_code}",
                  flush=True)
        sys.stdout.buffer.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(result.stderr)
        sys.stderr.flush()
        codes.append(result.exit_code)
    # One platform: its exit code. Several: the first non-zero one.
    return next((c for c in codes if c), 0)


def cmd_groups(args: argparse.Namespace) -> int:
    docs, tables = [], []
    for name in _platforms(args):
        config = prepare(_request(args, name))
        with Guest(config) as guest:
            bound = guest.bind_topology(args.bind) if args.bind else ()
            actual = guest.groups()
        at_probe = groups_at_probe(config.platform, kernel_profile(config.kernel).profile)
        comparison = compare_groups(predict_groups(config.topology, config.platform, bound,
                                                   at_probe), actual)
        docs.append({"platform": config.platform.name, "kernel": config.kernel.release,
                     "kernel_resolved": kernel_record(config.kernel),
                     "topology": config.topology.name, "accel": config.accel,
                     "bound": list(bound), **comparison_json(comparison)})
        tables.append(f"# {config.platform.name}, kernel {config.kernel.describe()}, topology "
                      f"{config.topology.name}, {config.accel}"
                      f"{', bound to ' + args.bind if args.bind else ''}\n"
                      f"{format_comparison(comparison)}")
    ok = all(d["ok"] for d in docs)
    if args.json:
        print(json.dumps(docs[0] if len(docs) == 1 else {"ok": ok, "platforms": docs}, indent=2))
    else:
        print("\n\n".join(tables))
        if len(docs) > 1:
            print("\n" + side_by_side(docs))
    return 0 if ok else EXIT_MISMATCH


def cmd_shell(args: argparse.Namespace) -> int:
    if not sys.stdin.isatty():
        raise HarnessError("shell needs a terminal on stdin",
                           "use 'iommu-harness boot -- CMD' from scripts")
    if args.platform == "all":
        raise ConfigError("shell takes one platform, not 'all'", "pick one with --platform")
    config = prepare(_request(args, args.platform))
    with Guest(config) as guest:
        print(f"{config.platform.name} {config.kernel.release}: exit the shell to power off; "
              f"logs in {config.out_dir}", file=sys.stderr)
        chan = guest.ssh.interactive()
        _bridge(chan)
    return 0


def _bridge(chan: paramiko.Channel) -> None:
    """Copy the terminal to a paramiko channel and back, raw, until the remote side ends."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        cols, rows = os.get_terminal_size()
        chan.resize_pty(width=cols, height=rows)
        while True:
            ready, _, _ = select.select([chan, fd], [], [])
            if chan in ready:
                data = chan.recv(4096)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if fd in ready:
                data = os.read(fd, 4096)
                if not data:
                    break
                chan.sendall(data)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def cmd_scenario(args: argparse.Namespace) -> int:
    extra = [get_profile(p) for p in args.also_profile]
    choice = ProfileChoice(get_profile(args.profile)) if args.profile else None
    plan = [(name, [load_scenario(f, PLATFORMS[name]) for f in args.files])
            for name in _platforms(args)]  # every file checked before any guest boots
    started, runs = now(), []

    def booted(guest: Guest, used: ProfileChoice) -> None:
        if used.note:
            print(f"iommu-harness: {used.note}", file=sys.stderr, flush=True)
        if not args.json:
            print(f"# {guest.config.platform.name}: kernel {guest.config.kernel.describe()}, "
                  f"model profile {used.profile.name}{' (assumed)' if used.assumed else ''}",
                  flush=True)

    def done(result: ScenarioResult) -> None:
        if not args.json:
            print(format_scenario(result), flush=True)

    for name, scenarios in plan:
        for topo_file, group in _by_topology(scenarios).items():
            request = replace(_request(args, name), topology=topo_file)
            runs += run_on_guests(request, group, choice, extra, booted, done)
    results = RunResults(tuple(runs), started, now(), host_facts())
    if args.json:
        print(json.dumps(results_json(results), indent=2))
    return 0 if results.ok else EXIT_MISMATCH


def _by_topology(scenarios: list[Scenario]) -> dict[Path, list[Scenario]]:
    groups: dict[Path, list[Scenario]] = {}
    for s in scenarios:
        groups.setdefault(topology_file(s), []).append(s)
    return groups


def cmd_report(args: argparse.Namespace) -> int:
    return cmd_report_merge(args)


COMMANDS = {"boot": cmd_boot, "groups": cmd_groups, "shell": cmd_shell,
            "scenario": cmd_scenario, "kernels": cmd_kernels, "profiles": cmd_profiles,
            "run": cmd_run, "report": cmd_report, "validate": cmd_validate,
            "bisect": cmd_bisect, "bisect-step": cmd_bisect_step, "selftest": cmd_selftest}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="iommu-harness: %(message)s")
    # SIGTERM/SIGHUP unwind like Ctrl-C so every guest is stopped and reaped on the way out;
    # SIGINT is Ctrl-C's KeyboardInterrupt even when started with it ignored (nohup ... &, cron).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        return COMMANDS[args.command](args)
    except HarnessError as exc:
        print(f"iommu-harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("iommu-harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
