"""``iommu-harness validate``: does a patch series make the attach rules worse?

The series is applied with ``git am`` in a throwaway worktree (:mod:`harness.worktree`), the
base and the patched tree are built and run with the same scenarios and fuzz budget
(:mod:`harness.treerun`), and the two runs are compared (:mod:`harness.compare`). With
``--per-patch`` every prefix of the series is run too, and the first patch that changed the
result is named. Exit 0: nothing got worse; 1: something did; 2: a usage or set-up error.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .compare import RunDiff, diff_json, diff_runs, format_diff
from .errors import BuildError, ConfigError
from .platforms import PLATFORMS
from .prepare import out_root
from .results import RunResults
from .treerun import TreeRun, checked_scenarios, run_tree
from .worktree import commit_of, git, repository, scratch, subject, try_git

EXIT_OK, EXIT_WORSE, EXIT_HARNESS = 0, 1, 2  # EXIT_HARNESS: also what run returns
DEFAULT_FUZZ = 30


def add_validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", required=True, type=Path, metavar="DIR",
                   help="the kernel git repository (never modified: a worktree in the cache "
                        "is used)")
    p.add_argument("--base", required=True, metavar="REV", help="the commit the series applies "
                                                                 "to")
    p.add_argument("--series", required=True, type=Path, nargs="+", metavar="MBOX",
                   help="the series: an mbox, or patch files in order (git format-patch)")
    p.add_argument("--per-patch", action="store_true",
                   help="also run every prefix of the series; name the first patch that "
                        "changed the result")
    p.add_argument("--platform", default="x86_64-vtd", choices=[*sorted(PLATFORMS), "all"])
    p.add_argument("--scenario", nargs="+", type=Path, metavar="FILE",
                   help="scenario files (default: the catalogue)")
    p.add_argument("--fuzz-steps", type=int, default=DEFAULT_FUZZ, metavar="N",
                   help="random operations on each side, the same seed on both "
                        "(default: %(default)s)")
    p.add_argument("--fuzz-seed", type=int, default=0, metavar="S")
    p.add_argument("--kconfig", action="append", default=[], metavar="NAME")
    p.add_argument("--out", type=Path, help="output folder (default: ./out/validate-<time>)")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N")
    p.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    p.add_argument("--no-snapshot", action="store_true")


def _check(args: argparse.Namespace) -> tuple[Path, str, list[Path], TreeRun]:
    repo = repository(args.kernel)
    base = commit_of(repo, args.base)
    series = [p.expanduser().resolve() for p in args.series]
    for patch in series:
        if not patch.is_file():
            raise ConfigError(f"series file {patch} does not exist",
                              "pass an mbox or git format-patch files")
    if args.fuzz_steps < 0:
        raise ConfigError(f"--fuzz-steps {args.fuzz_steps} is negative", "write 0 or more")
    platforms, files = checked_scenarios(args)
    spec = TreeRun(platforms=platforms, scenarios=files,
                   fuzz_steps=args.fuzz_steps, fuzz_seed=args.fuzz_seed,
                   kconfig=tuple(args.kconfig), jobs=args.jobs, accel=args.accel,
                   snapshot=not args.no_snapshot)
    return repo, base, series, spec


def _side(spec: TreeRun, tree: Path, out: Path, name: str) -> RunResults | None:
    """One side's run; None when it could not be made (a guest that did not boot, ...)."""
    print(f"validate: {name}: {subject(tree, 'HEAD')}", flush=True)
    code, results = run_tree(spec, tree, out)
    return None if results is None or code == EXIT_HARNESS else results


def _apply(tree: Path, repo: Path, base: str, series: list[Path]) -> list[str]:
    """``git am`` the series in the worktree; the commits it made, oldest first."""
    code, said = try_git(tree, "am", "--3way", *map(str, series))
    commits = git(tree, "rev-list", "--reverse", f"{base}..HEAD").split()
    if code != 0 or not commits:
        try_git(tree, "am", "--abort")
        lines = said.splitlines()
        failed = ([ln for ln in lines if ln.startswith("Patch failed at")]
                  or [ln for ln in lines if "error" in ln.lower()] or lines[-1:]
                  or ["no patches"])
        raise ConfigError(f"the series does not apply to {subject(repo, base)}: {failed[0]}",
                          "rebase it onto --base, or pass the base it was written for")
    return commits


@dataclass
class PatchedSide:
    """The patched side so far: one record per prefix run, the last diff, the first change."""

    records: list[dict[str, object]] = field(default_factory=list)
    final: RunDiff | None = None
    builds: bool = True
    first_change: str = ""

    @property
    def worse(self) -> bool:
        return not self.builds or (self.final is not None and self.final.worse)


def _run_prefixes(spec: TreeRun, tree: Path, out: Path, commits: list[str],
                  prefixes: list[str], base_results: RunResults) -> PatchedSide:
    result = PatchedSide()
    for commit in prefixes:
        n = commits.index(commit) + 1
        git(tree, "checkout", "--detach", "-q", commit)
        name, title = f"patch {n}/{len(commits)}", subject(tree, commit)
        try:
            patched = _side(spec, tree, out / f"patched-{n}", name)
        except BuildError as exc:
            patched, problem = None, f"does not build: {exc.problem}"
        else:
            problem = "its run could not be made (see the output above)"
        if patched is None:
            print(f"validate: {name} {problem}", flush=True)
            result.records.append({"commit": commit, "subject": title, "builds": False,
                                   "error": problem})
            result.first_change = result.first_change or title
            result.builds, result.final = False, None
            continue
        diff = diff_runs(base_results, patched)
        result.records.append({"commit": commit, "subject": title, "builds": True,
                               **diff_json(diff)})
        if diff.changed and not result.first_change:
            result.first_change = title
        result.builds, result.final = True, diff
    return result


def cmd_validate(args: argparse.Namespace) -> int:
    repo, base, series, spec = _check(args)
    out = (args.out or out_root() / f"validate-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    with scratch(repo, base) as tree:
        commits = _apply(tree, repo, base, series)  # first: a series that does not apply
        git(tree, "checkout", "--detach", "-q", base)  # is one line before any build
        try:
            base_results = _side(spec, tree, out / "base", "base")
        except BuildError as exc:
            raise ConfigError(f"the base {subject(repo, base)} does not build: {exc.problem}",
                              exc.fix) from exc
        if base_results is None:
            raise ConfigError(f"the base {subject(repo, base)}'s run could not be made",
                              f"see the output above and {out / 'base'}")
        prefixes = commits if args.per_patch else commits[-1:]
        result = _run_prefixes(spec, tree, out, commits, prefixes, base_results)
    print(f"\nvalidate: base {subject(repo, base)}, {len(commits)} patches")
    print(format_diff(result.final, "base", "patched") if result.final is not None
          else "verdict: WORSE (the patched tree does not build, or its run could not be "
               "made)")
    if args.per_patch:
        print(f"first patch that changed the result: {result.first_change or 'none'}")
    (out / "validate.json").write_text(json.dumps(
        {"base": base, "series": [str(s) for s in series], "worse": result.worse,
         "first_change": result.first_change, "prefixes": result.records}, indent=1) + "\n")
    print(f"validate: report in {out / 'validate.json'}")
    return EXIT_WORSE if result.worse else EXIT_OK
