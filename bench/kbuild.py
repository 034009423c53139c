"""Building a kernel source tree: a full build of the shipped base configuration, an
incremental rebuild after touching drivers/iommu/iommu.c, and one bisect step.

Usage: python bench/kbuild.py --tree DIR [--arch x86_64] [--arch aarch64] [--step] [--json]

DIR must be a git repository (the slow tests' ``<cache>/slow/linux-6.1`` is one). Everything
happens in a throwaway worktree of it (``harness.worktree``), never in DIR itself. The full
build runs in a private cache folder with ccache disabled, so it is a build from nothing; the
incremental rebuild appends a comment to iommu.c and builds again (ccache on, as users run
it). ``--step`` times what one bisect step does on x86_64: that incremental build, our modules,
the image, a guest and one scenario (``harness.treerun.run_tree``).

Prints the machine with every figure: only ratios between rows of one run compare.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from harness import cache
from harness.accel import _cpu_model
from harness.kbuild import BuildPlan, SourceBuild
from harness.kfragments import fragment_files
from harness.srctree import tree_state
from harness.treerun import TreeRun, run_tree
from harness.worktree import commit_of, repository, scratch

SCENARIO = Path(__file__).resolve().parent.parent / "tests" / "scenarios" / \
    "attach-device-refused-multi-device-group.toml"
FRAGMENT_ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}


def timed_build(tree: Path, arch: str) -> float:
    build = SourceBuild(BuildPlan(tree, arch, tuple(fragment_files(FRAGMENT_ARCH[arch]))))
    started = time.perf_counter()
    build.ensure(tree_state(tree))
    return time.perf_counter() - started


def touch_iommu(tree: Path, n: int) -> None:
    with (tree / "drivers" / "iommu" / "iommu.c").open("a") as f:
        f.write(f"\n/* bench/kbuild.py {n} */\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, required=True)
    parser.add_argument("--arch", action="append", choices=sorted(FRAGMENT_ARCH))
    parser.add_argument("--step", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    repo = repository(args.tree)
    rows: list[dict[str, object]] = []
    with scratch(repo, commit_of(repo, "HEAD")) as tree:
        saved = os.environ.get(cache.ENV_CACHE)
        with tempfile.TemporaryDirectory(prefix="bench-kbuild-") as private:
            os.environ[cache.ENV_CACHE] = private
            os.environ["CCACHE_DISABLE"] = "1"
            for arch in args.arch or ["x86_64"]:
                rows.append({"what": "full build, no ccache", "arch": arch,
                             "seconds": round(timed_build(tree, arch), 1)})
                touch_iommu(tree, 1)
                del os.environ["CCACHE_DISABLE"]
                rows.append({"what": "rebuild after touching iommu.c", "arch": arch,
                             "seconds": round(timed_build(tree, arch), 1)})
                os.environ["CCACHE_DISABLE"] = "1"
            del os.environ["CCACHE_DISABLE"]
        if saved is None:
            del os.environ[cache.ENV_CACHE]
        else:
            os.environ[cache.ENV_CACHE] = saved
        if args.step:
            spec = TreeRun(platforms=("x86_64-vtd",), scenarios=(SCENARIO,), quiet=True)
            run_tree(spec, tree, Path(tempfile.mkdtemp(prefix="bench-step-")))  # warm
            touch_iommu(tree, 2)
            started = time.perf_counter()
            run_tree(spec, tree, Path(tempfile.mkdtemp(prefix="bench-step-")))
            rows.append({"what": "bisect step (rebuild, modules, image, guest, scenario)",
                         "arch": "x86_64", "seconds": round(time.perf_counter() - started, 1)})
    machine = {"cpu": _cpu_model(), "cores": os.cpu_count()}
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows}, indent=1))
        return
    print(f"machine: {machine['cpu']}, {machine['cores']} cores")
    for row in rows:
        print(f"{row['arch']:<8} {row['what']:<58} {row['seconds']:>8} s")


if __name__ == "__main__":
    main()
