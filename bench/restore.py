"""A pristine guest restored from its saved state, next to one booted: time to the first reply.

Usage: python bench/restore.py [--platform P]... [--kernel K]... [--n 5] [--catalogue] [--json]

For each platform and kernel: the boot and save of a new state (in a private store, so the
cache's states are not touched), ``--n`` restores of it and ``--n`` boots, each measured from
``Guest.__enter__`` to its return (the guest answers: a boot includes the ready commands, a
restore the commands after it). ``--catalogue`` also times the scenario catalogue with a guest
restored per scenario against a guest booted per scenario (``--no-snapshot``).

Prints the machine it ran on with every figure: times from elsewhere are not comparable, ratios
between rows of one run are.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.accel import _cpu_model
from harness.guest import Guest, GuestConfig
from harness.prepare import GuestRequest, prepare
from harness.runner import pristine, run_on_guests
from harness.scenario import load_scenario
from harness.snapshot import SnapshotStore

SCENARIOS = sorted((Path(__file__).parent.parent / "tests" / "scenarios").glob("*.toml"))


def machine(qemu_binary: str) -> dict[str, object]:
    qemu = subprocess.run([qemu_binary, "--version"], capture_output=True, text=True,
                          check=False).stdout.splitlines()[0]
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "qemu": qemu}


def timed_start(config: GuestConfig, label: str) -> tuple[float, Guest]:
    guest = pristine(config, label)
    started = time.perf_counter()
    guest.__enter__()
    return time.perf_counter() - started, guest


def starts(config: GuestConfig, n: int, what: str) -> list[float]:
    times = []
    for k in range(n):
        seconds, guest = timed_start(config, f"{what}-{k}")
        guest.close()
        times.append(seconds)
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times),
            "n": len(times)}


def bench(platform: str, kernel: str, n: int, accel: str, out: Path) -> dict[str, object]:
    config = prepare(GuestRequest(platform=platform, kernel=kernel, accel=accel,
                                  out_root=out))
    store = SnapshotStore(Path(tempfile.mkdtemp(prefix="ih-bench-store-")))
    saving = dataclasses.replace(config, snapshots=store)
    first, guest = timed_start(saving, "save")
    saved = guest.saved_as
    guest.close()
    assert saved is not None, "the first guest of a new store boots and saves"
    restored = starts(saving, n, "restore")
    booted = starts(dataclasses.replace(config, snapshots=None), n, "boot")
    return {"platform": platform, "kernel": config.kernel.release, "accel": config.accel,
            **machine(config.platform.qemu_binary),
            "boot_and_save_s": first, "save_s": saved.meta.get("seconds"),
            "state_mib": saved.state.stat().st_size / 2**20,
            "restore_to_reply_s": summary(restored), "boot_to_reply_s": summary(booted),
            "restore_vs_boot": statistics.median(restored) / statistics.median(booted)}


def catalogue(platform: str, kernel: str, accel: str, out: Path) -> dict[str, object]:
    """The catalogue with a guest restored per scenario, then booted per scenario."""
    times = {}
    for snapshot in (True, False):
        request = GuestRequest(platform=platform, kernel=kernel, accel=accel, out_root=out,
                               snapshot=snapshot)
        config = prepare(request)
        scenarios = [load_scenario(p, config.platform) for p in SCENARIOS]
        with pristine(config, "warm"):
            pass  # the state exists before the clock starts
        started = time.perf_counter()
        results = run_on_guests(request, scenarios)
        times["restored" if snapshot else "booted"] = time.perf_counter() - started
        assert all(r.ok for r in results), [r.scenario for r in results if not r.ok]
    return {"platform": platform, "kernel": kernel, "scenarios": len(SCENARIOS),
            "restored_s": times["restored"], "booted_s": times["booted"],
            "restored_vs_booted": times["restored"] / times["booted"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", action="append", help="repeatable; default: both")
    parser.add_argument("--kernel", action="append", help="repeatable; default debian:6.1")
    parser.add_argument("--n", type=int, default=5, help="restores and boots each (default 5)")
    parser.add_argument("--accel", default="auto")
    parser.add_argument("--catalogue", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = Path("out/bench")
    pairs = [(p, k) for p in args.platform or ["x86_64-vtd", "aarch64-smmuv3"]
             for k in args.kernel or ["debian:6.1"]]
    rows = [bench(p, k, args.n, args.accel, out) for p, k in pairs]
    cats = [catalogue(p, k, args.accel, out) for p, k in pairs] if args.catalogue else []
    if args.json:
        print(json.dumps({"starts": rows, "catalogue": cats}, indent=2))
        return 0
    first = rows[0]
    print(f"# {first['cpu']}, {first['cores']} cores, {first['qemu']}, {first['accel']}")
    for r in rows:
        rs, bs = r["restore_to_reply_s"], r["boot_to_reply_s"]
        assert isinstance(rs, dict) and isinstance(bs, dict)
        print(f"{r['platform']:<15} {r['kernel']:<22} restore {rs['median']:.2f} s "
              f"(min {rs['min']:.2f})  boot {bs['median']:.2f} s  ratio "
              f"{r['restore_vs_boot']:.2f}  state {r['state_mib']:.0f} MiB, saved in "
              f"{r['save_s']} s")
    for c in cats:
        print(f"catalogue {c['platform']:<15} {c['kernel']}: restored per scenario "
              f"{c['restored_s']:.0f} s, booted per scenario {c['booted_s']:.0f} s "
              f"(ratio {c['restored_vs_booted']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
