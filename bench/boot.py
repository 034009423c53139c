"""Boot-to-shell time and command round trips, per platform and kernel.

Usage: python bench/boot.py [--platform P] [--kernel K] [--boots 5] [--commands 200] [--json]

Prints the machine it ran on (CPU model, cores, QEMU version, accelerator) with every figure:
times from elsewhere are not comparable, ratios between rows of one run are.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness.accel import _cpu_model
from harness.guest import Guest
from harness.prepare import GuestRequest, prepare


def machine(qemu_binary: str) -> dict[str, object]:
    qemu = subprocess.run([qemu_binary, "--version"], capture_output=True, text=True,
                          check=False).stdout.splitlines()[0]
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "qemu": qemu}


def round_trips(run: object, n: int, command: str = "true") -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        run(command)  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return times


# A line of output, and 1 MiB (16 acknowledged chunks of the control channel's reply)
ECHO, MIB = "echo ih-bench", "head -c 1048576 /dev/zero"


def summary(times: list[float]) -> dict[str, float]:
    return {"median": 1000 * statistics.median(times),
            "p90": 1000 * sorted(times)[int(0.9 * len(times))], "n": len(times)}


def bench(platform: str, kernel: str, boots: int, commands: int, accel: str) -> dict[str, object]:
    request = GuestRequest(platform=platform, kernel=kernel, accel=accel,
                           out_root=Path("out/bench"), snapshot=False)  # boots, every one
    config = prepare(request)
    ready: list[float] = []
    for _ in range(boots):
        guest = Guest(prepare(request))  # fetch, image and accelerator choice: cached, untimed
        started = time.perf_counter()
        with guest:
            ready.append(time.perf_counter() - started)
    with Guest(prepare(request)) as g:
        assert g.serial is not None
        serial = round_trips(g.serial.run, commands)
        echo = round_trips(g.serial.run, commands, ECHO)
        mib = round_trips(g.serial.run, max(3, commands // 20), MIB)
        ssh = round_trips(g.ssh.run, commands)
    return {
        "platform": platform, "kernel": config.kernel.release, "accel": config.accel,
        **machine(config.platform.qemu_binary),
        "boot_to_shell_s": {"median": statistics.median(ready), "min": min(ready),
                            "max": max(ready), "n": boots},
        "serial_rtt_ms": summary(serial), "serial_echo_ms": summary(echo),
        "serial_1mib_ms": summary(mib), "ssh_rtt_ms": summary(ssh),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", action="append", help="repeatable; default x86_64-vtd")
    parser.add_argument("--kernel", action="append", help="repeatable; default debian:6.1")
    parser.add_argument("--boots", type=int, default=5)
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--accel", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [bench(p, k, args.boots, args.commands, args.accel)
               for p in args.platform or ["x86_64-vtd"] for k in args.kernel or ["debian:6.1"]]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    first = results[0]
    print(f"machine: {first['cpu']}, {first['cores']} cores, {first['qemu']}")
    for r in results:
        b, s, h = r["boot_to_shell_s"], r["serial_rtt_ms"], r["ssh_rtt_ms"]
        e, m = r["serial_echo_ms"], r["serial_1mib_ms"]
        assert isinstance(b, dict) and isinstance(s, dict) and isinstance(h, dict)
        assert isinstance(e, dict) and isinstance(m, dict)
        print(f"{r['platform']:<16} {r['kernel']:<24} {r['accel']:<4} "
              f"boot-to-shell median {b['median']:.2f}s (min {b['min']:.2f}, max {b['max']:.2f}, "
              f"n={b['n']})  'true' round trip: serial {s['median']:.1f} ms (p90 {s['p90']:.1f}),"
              f" ssh {h['median']:.1f} ms (p90 {h['p90']:.1f}); serial 'echo' "
              f"{e['median']:.1f} ms, 1 MiB of output {m['median']:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
