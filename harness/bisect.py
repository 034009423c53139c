"""``iommu-harness bisect``: which commit broke the attach rules?

Before bisecting, the bad commit and the good one are built and run: the signature to hunt is
the bad commit's first finding that the good commit does not show (or ``--signature``), and
the good commit's findings are the baseline every other commit may show without being bad.
Then ``git bisect run`` drives ``iommu-harness bisect-step`` in a throwaway worktree; each step
builds the commit, runs the scenarios ``--repeat`` times and exits 0 (good), 1 (bad: a run
showed the signature) or 125 (skip: the commit does not build, a run could not be made, or it
failed some other way). A harness error in a step exits 255, which stops the bisection: it is
never read as bad. The user's repository is left as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from .compare import EXIT_FOR, bisect_verdict, findings, pick_signature
from .errors import BuildError, ConfigError, HarnessError, KernelError
from .platforms import PLATFORMS
from .prepare import out_root
from .results import RunResults
from .treerun import TreeRun, checked_scenarios, run_tree
from .worktree import commit_of, git, repository, scratch, subject, try_git

EXIT_FOUND, EXIT_UNDECIDED, EXIT_HARNESS = 0, 1, 2
EXIT_ABORT = 255  # git bisect run stops on it
STATE_FILE = "bisect.json"
STEPS_FILE = "steps.jsonl"


def add_bisect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", required=True, type=Path, metavar="DIR",
                   help="the kernel git repository (never modified: a worktree in the cache "
                        "is used)")
    p.add_argument("--good", required=True, metavar="REV", help="a commit without the failure")
    p.add_argument("--bad", required=True, metavar="REV", help="a commit with the failure")
    p.add_argument("--scenario", nargs="+", type=Path, metavar="FILE", required=True,
                   help="the scenario files that show the failure")
    p.add_argument("--platform", default="x86_64-vtd", choices=[*sorted(PLATFORMS), "all"])
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="runs per commit, for a flaky failure: bad if any run shows it")
    p.add_argument("--signature", help="the finding to hunt, as the bad commit's run names it "
                                       "(default: its first finding the good commit lacks)")
    p.add_argument("--kconfig", action="append", default=[], metavar="NAME")
    p.add_argument("--out", type=Path, help="output folder (default: ./out/bisect-<time>)")
    p.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    p.add_argument("--no-snapshot", action="store_true")


def add_step_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", type=Path, required=True, help="the bisect's bisect.json")


def _spec(args: argparse.Namespace) -> TreeRun:
    if args.repeat < 1:
        raise ConfigError(f"--repeat {args.repeat} is not a number of runs", "write 1 or more")
    platforms, files = checked_scenarios(args)
    return TreeRun(platforms=platforms, scenarios=files,
                   kconfig=tuple(args.kconfig), accel=args.accel,
                   snapshot=not args.no_snapshot, quiet=True)


def spec_json(spec: TreeRun) -> dict[str, object]:
    return {"platforms": list(spec.platforms), "scenarios": [str(s) for s in spec.scenarios],
            "kconfig": list(spec.kconfig), "accel": spec.accel, "snapshot": spec.snapshot}


def spec_from_json(doc: dict[str, object]) -> TreeRun:
    def strings(key: str) -> tuple[str, ...]:
        value = doc[key]
        assert isinstance(value, list)
        return tuple(str(v) for v in value)

    return TreeRun(platforms=strings("platforms"),
                   scenarios=tuple(Path(s) for s in strings("scenarios")),
                   kconfig=strings("kconfig"), accel=str(doc["accel"]),
                   snapshot=bool(doc["snapshot"]), quiet=True)


def _attempts(spec: TreeRun, tree: Path, out: Path, repeat: int) -> list[RunResults | None]:
    runs: list[RunResults | None] = []
    for k in range(1, repeat + 1):
        code, results = run_tree(spec, tree, out / f"run-{k}")
        runs.append(None if code == EXIT_HARNESS else results)
    return runs


def _endpoint(spec: TreeRun, tree: Path, commit: str, out: Path, name: str) -> RunResults:
    git(tree, "checkout", "--detach", "--force", "-q", commit)
    print(f"bisect: running the {name} commit {subject(tree, commit)}", flush=True)
    try:
        code, results = run_tree(spec, tree, out)
    except BuildError as exc:
        raise ConfigError(f"the {name} commit does not build: {exc.problem}", exc.fix) from exc
    if results is None or code == EXIT_HARNESS:
        raise ConfigError(f"the {name} commit's run could not be made (exit {code})",
                          f"see {out}")
    return results


def cmd_bisect(args: argparse.Namespace) -> int:
    repo = repository(args.kernel)
    good, bad = commit_of(repo, args.good), commit_of(repo, args.bad)
    spec = _spec(args)
    if try_git(repo, "merge-base", "--is-ancestor", good, bad)[0] != 0:
        raise ConfigError(f"--good {args.good} is not an ancestor of --bad {args.bad}",
                          "pass a good commit older than the bad one")
    out = (args.out or out_root() / f"bisect-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    with scratch(repo, bad) as tree:
        bad_results = _endpoint(spec, tree, bad, out / "bad", "bad")
        good_results = _endpoint(spec, tree, good, out / "good", "good")
        baseline = sorted({f.signature for f in findings(good_results)})
        signature = args.signature or pick_signature(bad_results, good_results)
        bad_names = {f.signature for f in findings(bad_results)}
        if signature is None:
            raise ConfigError("the bad commit shows no failure the good commit does not",
                              "check --bad, --good and --scenario")
        if signature not in bad_names:
            raise ConfigError(f"the bad commit does not show {signature!r}",
                              f"pick one of: {'; '.join(sorted(bad_names)) or 'none'}")
        if signature in baseline:
            raise ConfigError(f"the good commit shows {signature!r} too",
                              "pass an older --good")
        print(f"bisect: hunting {signature}", flush=True)
        state = out / STATE_FILE
        state.write_text(json.dumps({"signature": signature, "baseline": baseline,
                                     "repeat": args.repeat, "out": str(out),
                                     "spec": spec_json(spec)}, indent=1) + "\n")
        git(tree, "bisect", "start", bad, good)
        proc = subprocess.run(
            ["git", "-C", str(tree), "bisect", "run", *step_argv(state)], capture_output=True,
            text=True, errors="replace", stdin=subprocess.DEVNULL, check=False,
            env={**os.environ, "PYTHONPATH": str(HARNESS_ROOT)})
        log = git(tree, "bisect", "log", check=False)
        git(tree, "bisect", "reset", check=False)
    (out / "git-bisect-run.log").write_text(proc.stdout + proc.stderr)
    (out / "git-bisect.log").write_text(log)
    return _conclude(out, proc.stdout + proc.stderr, signature, repo)


HARNESS_ROOT = Path(__file__).resolve().parent.parent
# git bisect run reads 1-127 (but 125) as bad: whatever makes the step itself fail (it cannot
# start, a Python error before its own handlers) must stop the bisection instead (255).
STEP_GUARD = '"$@"; c=$?; case $c in 0|1|125) exit $c;; *) exit 255;; esac'


def step_argv(state: Path) -> list[str]:
    """What git bisect runs for each commit: bisect-step, its exit code guarded."""
    return ["sh", "-c", STEP_GUARD, "sh", sys.executable, "-m", "harness.cli", "bisect-step",
            "--state", str(state)]


def first_bad(output: str) -> str | None:
    """The commit ``git bisect run`` named, from its output (pure)."""
    m = re.search(r"^([0-9a-f]{40}) is the first bad commit", output, re.M)
    return m.group(1) if m else None


def _conclude(out: Path, output: str, signature: str, repo: Path) -> int:
    steps = [json.loads(line) for line in (out / STEPS_FILE).read_text().splitlines()] \
        if (out / STEPS_FILE).is_file() else []
    for s in steps:
        print(f"bisect: {s['commit'][:12]} {s['verdict']:<4} {s['seconds']:6.0f}s  "
              f"{s['subject']}  ({s['why']})")
    commit = first_bad(output)
    aborted = any(s["verdict"] == "error" for s in steps)
    if commit is None:
        tail = [ln for ln in output.strip().splitlines() if ln.strip()][-4:]
        print("bisect: no single first bad commit: " + " | ".join(tail))
        return EXIT_HARNESS if aborted else EXIT_UNDECIDED
    print(f"bisect: first bad commit: {subject(repo, commit)}")
    print(f"bisect: signature: {signature}")
    print(f"bisect: logs in {out}")
    (out / "result.json").write_text(json.dumps(
        {"first_bad": commit, "subject": subject(repo, commit), "signature": signature,
         "steps": steps}, indent=1) + "\n")
    return EXIT_FOUND


def cmd_bisect_step(args: argparse.Namespace) -> int:
    """One commit, run by git bisect in the worktree (the current directory's repository)."""
    try:
        return _step(args)
    except BaseException as exc:  # noqa: BLE001 - whatever it is, git bisect must stop
        print(f"bisect-step: error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return EXIT_ABORT


def _step(args: argparse.Namespace) -> int:
    started = time.monotonic()
    state = json.loads(args.state.read_text())
    spec = spec_from_json(state["spec"])
    tree = Path.cwd()
    commit = git(tree, "rev-parse", "HEAD").strip()
    out = Path(state["out"]) / "steps" / commit[:12]
    verdict: str
    try:
        verdict, why = bisect_verdict(_attempts(spec, tree, out, int(state["repeat"])),
                                      state["signature"], state["baseline"])
        code = EXIT_FOR[verdict]
    except BuildError as exc:
        verdict, why, code = "skip", f"does not build: {exc.problem[:200]}", EXIT_FOR["skip"]
    except KernelError as exc:  # it builds, but cannot run on the platform (config)
        verdict, why, code = "skip", f"cannot run: {exc.problem[:200]}", EXIT_FOR["skip"]
    except HarnessError as exc:
        verdict, why, code = "error", str(exc)[:300], EXIT_ABORT
    except Exception as exc:  # noqa: BLE001 - a bug in a step must stop git bisect, not say bad
        verdict, why, code = "error", f"{type(exc).__name__}: {exc}"[:300], EXIT_ABORT
    record = {"commit": commit, "subject": subject(tree, commit), "verdict": verdict,
              "why": why, "seconds": round(time.monotonic() - started, 1)}
    with (Path(state["out"]) / STEPS_FILE).open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"bisect-step: {commit[:12]} {verdict} ({why})", flush=True)
    return code
