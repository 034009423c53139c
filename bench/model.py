"""Model operations per second (pure Python, no guest).

Usage: python bench/model.py [--ops N] [--profile P]
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from harness.accel import _cpu_model
from harness.model import OWNED, Model, get_profile

DEVS = ["0000:00:03.0", "0000:00:04.0", "0000:01:01.0", "0000:01:02.0"]
GROUPS = {0: [DEVS[0]], 1: [DEVS[1]], 2: ["0000:00:02.0", DEVS[2], DEVS[3]]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=300_000)
    parser.add_argument("--profile", default="linux-6.1")
    args = parser.parse_args()
    rng = random.Random(7)
    ops = ["attach_dev", "detach_dev", "attach_group", "detach_group", "claim_group",
           "release_group", "alloc", "free", "map", "unmap", "replace", "raw_detach_dev",
           "raw_release_group", "attach_pasid", "detach_pasid", "set_type"]
    lines = []
    for _ in range(args.ops):
        op, dev, h = rng.choice(ops), rng.choice(DEVS), rng.choice("ab")
        lines.append({"claim_group": f"claim_group {dev} o", "release_group":
                      f"release_group {dev}", "alloc": f"alloc {h} {dev}", "free": f"free {h}",
                      "map": f"map {h} 0x100000 0x1000", "unmap": f"unmap {h} 0x100000",
                      "raw_release_group": f"raw_release_group {dev}",
                      "attach_pasid": f"attach_pasid {h} {dev} 1",
                      "detach_pasid": f"detach_pasid {h} {dev} 1",
                      "set_type": f"set_type {dev} {rng.choice(['identity', 'DMA', 'auto'])}"}
                     .get(op, f"{op} {h} {dev}"))
    model = Model(get_profile(args.profile), False, GROUPS,
                  {**dict.fromkeys(DEVS, OWNED), "0000:00:02.0": "none"})
    started = time.perf_counter()
    for line in lines:
        model.apply(line)
    rate = len(lines) / (time.perf_counter() - started)
    print(f"{_cpu_model()}: model {args.profile}: {rate:,.0f} operations per second "
          f"({len(lines):,} random operations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
