"""Wall time of ``iommu-harness run`` over the default matrix with -j 1 and -j 2 (kernels,
images and modules cached before the first timed run), where the time goes (boots and
scenarios, from results.json), and the machine it ran on.

Usage: python bench/run.py [--jobs 1,2] [--kernel SPEC,...] [--platform all]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.accel import _cpu_model
from harness.results import load_results
from harness.runcmd import DEFAULT_KERNELS


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=False, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="1,2")
    parser.add_argument("--kernel", default=DEFAULT_KERNELS)
    parser.add_argument("--platform", default="all")
    args = parser.parse_args()
    base = [sys.executable, "-m", "harness.cli", "run", "--platform", args.platform,
            "--kernel", args.kernel]
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Warm the caches (downloads, builds) so that the timed runs measure the run itself.
        timed([*base, "--scenario", "tests/scenarios/singleton-attach-detach.toml",
               "--out", f"{tmp}/warm"])
        for jobs in map(int, args.jobs.split(",")):
            out = Path(tmp) / f"j{jobs}"
            walls[jobs] = timed([*base, "-j", str(jobs), "--out", str(out)])
            runs = load_results(out).runs
            busy = sum(r.duration for r in runs)
            print(f"-j {jobs}: wall {walls[jobs]:.0f} s ({walls[jobs] / 60:.1f} min); "
                  f"{len(runs)} scenario runs, {busy:.0f} s in scenarios, the rest boots and "
                  f"set-up", flush=True)
    first = min(walls)
    ratios = ", ".join(f"-j {j}: {walls[first] / w:.2f}x" for j, w in walls.items())
    print(f"machine: {_cpu_model()}, {os.cpu_count()} cores; speed-up over -j {first}: {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
