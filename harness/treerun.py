"""Build a kernel tree as it stands and run scenarios on it: one side of ``validate``, one
commit of ``bisect``. The build comes first, for every platform, so that a tree that does not
build is told apart (:class:`BuildError`) from a kernel that builds and then fails; the run is
``iommu-harness run`` on that tree, into its own folder, read back as :class:`RunResults`."""

from __future__ import annotations

import argparse
import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

from .kbuild import source_kernel
from .platforms import PLATFORMS
from .results import RESULTS_FILE, RunResults, load_results
from .runcmd import add_run_arguments, cmd_run, scenario_files
from .scenario import load_scenario

EXIT_HARNESS = 2


@dataclass(frozen=True)
class TreeRun:
    """What to run on each tree state: the same for every side and every commit."""

    platforms: tuple[str, ...]
    scenarios: tuple[Path, ...]
    fuzz_steps: int = 0
    fuzz_seed: int = 0
    kconfig: tuple[str, ...] = ()
    jobs: int = 1
    accel: str = "auto"
    boot_timeout: float = 90.0
    snapshot: bool = True
    quiet: bool = False

    def run_argv(self, tree: Path, out: Path) -> list[str]:
        argv = ["--platform", self.platforms[0] if len(self.platforms) == 1 else "all",
                "--kernel", str(tree), "--out", str(out), "-j", str(self.jobs),
                "--accel", self.accel, "--boot-timeout", str(self.boot_timeout),
                "--fuzz-steps", str(self.fuzz_steps), "--fuzz-seed", str(self.fuzz_seed)]
        if self.scenarios:
            argv += ["--scenario", *map(str, self.scenarios)]
        for name in self.kconfig:
            argv += ["--kconfig", name]
        if not self.snapshot:
            argv.append("--no-snapshot")
        return argv


def build_all(spec: TreeRun, tree: Path) -> None:
    """Build the tree for every platform (or find it built); BuildError when it does not."""
    for name in spec.platforms:
        source_kernel(str(tree), PLATFORMS[name], spec.kconfig)


def run_tree(spec: TreeRun, tree: Path, out: Path) -> tuple[int, RunResults | None]:
    """Build, then run; the run's exit code and its results (None when it wrote none)."""
    build_all(spec, tree)
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    args = parser.parse_args(spec.run_argv(tree, out))
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink) if spec.quiet else contextlib.nullcontext():
        code = cmd_run(args)
    if not (out / RESULTS_FILE).is_file():
        return code or EXIT_HARNESS, None
    return code, load_results(out)


def platforms_of(value: str) -> tuple[str, ...]:
    return tuple(sorted(PLATFORMS, reverse=True)) if value == "all" else (value,)


def checked_scenarios(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[Path, ...]]:
    """``--platform`` and ``--scenario`` (default: the catalogue), every file loaded on every
    platform before anything is built: a bad file is one line first."""
    platforms = platforms_of(args.platform)
    files = scenario_files(args.scenario)
    for name in platforms:
        for f in files:
            load_scenario(f, PLATFORMS[name])
    return platforms, tuple(p.resolve() for p in files)
