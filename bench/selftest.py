"""Wall time of the kernel's own selftests inside our guest (``iommu-harness selftest``), per
suite and per fixture, beside the whole command's wall time (build found in the cache, image,
boot, the programs).

Usage: python bench/selftest.py --kernel DIR [--suite iommufd] [--suite vfio] [--repeat 1]
       [--json]

The in-guest figure is the sum of the programs' run times as the guest's control channel
measured them (each program's tests share its time evenly in results.json, so the sums per
program are exact; a fixture's share within a program is by its number of tests). Prints the
machine: figures from another machine do not compare.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.accel import _cpu_model

HARNESS = [sys.executable, "-m", "harness.cli"]


def program_of(run: dict[str, str]) -> str:
    """The fixture a result belongs to, with the suite's label (pure)."""
    label, _, test = run["scenario"].partition(": ")
    return f"{label}: {test.split('.')[0]}"


@dataclass(frozen=True)
class Row:
    wall_s: float
    tests: int
    outcomes: dict[str, int]
    in_guest_s: dict[str, float]  # per suite
    programs_s: dict[str, float]
    exit: int


def one_run(kernel: str, suites: list[str]) -> Row:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        argv = [*HARNESS, "selftest", "--kernel", kernel, "--out", str(out)]
        for s in suites:
            argv += ["--suite", s]
        began = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)
        wall = time.monotonic() - began
        if not (out / "results.json").is_file():
            raise SystemExit(f"bench/selftest.py: selftest failed: {proc.stderr[-2000:]}")
        runs = json.loads((out / "results.json").read_text())["runs"]
    per_program: dict[str, float] = defaultdict(float)
    per_suite: dict[str, float] = defaultdict(float)
    outcomes: dict[str, int] = defaultdict(int)
    for r in runs:
        per_program[program_of(r)] += float(r["duration"])
        per_suite[r["file"]] += float(r["duration"])
        outcomes[r["outcome"]] += 1
    return Row(round(wall, 1), len(runs), dict(outcomes),
               {k: round(v, 1) for k, v in per_suite.items()},
               {k: round(v, 1) for k, v in sorted(per_program.items())}, proc.returncode)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", required=True, help="a kernel source tree")
    parser.add_argument("--suite", action="append")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    suites = args.suite or ["iommufd", "vfio"]
    rows = [one_run(args.kernel, suites) for _ in range(args.repeat)]
    machine = {"cpu": _cpu_model(), "cores": os.cpu_count()}
    if args.json:
        print(json.dumps({"machine": machine, "runs": [asdict(r) for r in rows]}, indent=2))
        return 0
    print(f"machine: {machine['cpu']}, {machine['cores']} cores")
    for n, row in enumerate(rows, 1):
        print(f"run {n}: {row.tests} results {row.outcomes}, whole command {row.wall_s} s "
              f"(exit {row.exit})")
        for suite_file, secs in row.in_guest_s.items():
            print(f"  {suite_file}: {secs} s in the guest")
        for program, secs in row.programs_s.items():
            print(f"    {program}: {secs} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
