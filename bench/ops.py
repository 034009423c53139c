"""Operations per second through ih_attach's control file, one per round trip and batched.

Usage: python bench/ops.py [--platform P] [--kernel K] [--ops N] [--json]

The operation pair is attach_dev/detach_dev of one domain on a singleton group, plus a state
read: real kernel calls, no DMA (an edu transfer takes QEMU's 100 ms timer).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from harness.accel import _cpu_model
from harness.attach import DRIVER_OWNED, AttachCtl
from harness.guest import Guest
from harness.prepare import GuestRequest, prepare

DEV = "0000:00:03.0"
CYCLE = [f"attach_dev b {DEV}", f"state {DEV}", f"detach_dev b {DEV}"]


def measure(platform: str, kernel: str, n: int) -> dict[str, object]:
    config = prepare(GuestRequest(platform=platform, kernel=kernel,
                                  out_root=Path("out/bench")))
    with Guest(config) as g:
        ctl = AttachCtl(g)
        ctl.load()
        g.bind(DEV, DRIVER_OWNED)
        assert ctl.op(f"alloc b {DEV}").ok
        single = n // 10
        started = time.perf_counter()
        for i in range(single):
            assert ctl.op(CYCLE[i % 3]).ok
        single_rate = single / (time.perf_counter() - started)
        lines = [CYCLE[i % 3] for i in range(n)]
        started = time.perf_counter()
        results = ctl.batch(lines)
        batch_rate = n / (time.perf_counter() - started)
        assert len(results) == n and all(r.ok for r in results)
    return {"platform": platform, "kernel": config.kernel.release, "accel": config.accel,
            "cpu": _cpu_model(), "single_ops_per_s": single_rate, "batch_ops_per_s": batch_rate,
            "batch_size": n}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", action="append")
    parser.add_argument("--kernel", action="append")
    parser.add_argument("--ops", type=int, default=3000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [measure(p, k, args.ops) for p in args.platform or ["x86_64-vtd"]
            for k in args.kernel or ["debian:6.1"]]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"machine: {rows[0]['cpu']}")
    for r in rows:
        print(f"{r['platform']:<16} {r['kernel']:<24} {r['accel']:<4} single "
              f"{r['single_ops_per_s']:7.0f} ops/s   batched ({r['batch_size']}) "
              f"{r['batch_ops_per_s']:7.0f} ops/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
