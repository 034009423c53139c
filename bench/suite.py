"""Wall time of the test suite and where it goes: pytest under pytest-xdist, its JUnit file
summed per test file (worker time) beside the wall time of the whole run.

Usage: python bench/suite.py [--jobs N] [--kernels debian:6.1,...] [PYTEST_ARGS...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from harness.accel import _cpu_model


def per_file(junit: Path) -> dict[str, tuple[int, float]]:
    """Test file → (tests, seconds of worker time) from a JUnit XML report (pure)."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("classname", "?").replace(".", "/") + ".py"
        totals[name][0] += 1
        totals[name][1] += float(case.get("time", "0"))
    return {k: (int(v[0]), v[1]) for k, v in totals.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default=str(min(os.cpu_count() or 1, 4)))
    parser.add_argument("--kernels", help="IOMMU_HARNESS_TEST_KERNELS for the run")
    args, rest = parser.parse_known_args()
    env = dict(os.environ)
    if args.kernels:
        env["IOMMU_HARNESS_TEST_KERNELS"] = args.kernels
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", args.jobs, "--dist",
                               "worksteal", f"--junitxml={junit}", *(rest or ["tests"])],
                              env=env, check=False)
        wall = time.monotonic() - started
        files = per_file(junit) if junit.is_file() else {}
    worker = sum(s for _, s in files.values())
    print(f"machine: {_cpu_model()}, {os.cpu_count()} cores; pytest -n {args.jobs}: "
          f"wall {wall / 60:.1f} min, worker time {worker / 60:.1f} min "
          f"({worker / wall if wall else 0:.2f} workers busy on average); exit {proc.returncode}")
    for name, (count, seconds) in sorted(files.items(), key=lambda kv: -kv[1][1]):
        print(f"  {name:<48} {count:>4} tests {seconds / 60:6.1f} min "
              f"({100 * seconds / worker if worker else 0:4.1f}%)")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
