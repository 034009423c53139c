"""A VFIO map / DMA / unmap round trip from the guest's user space (guest_modules/tools/
ih-vfio.c), on a singleton edu bound to vfio-pci.

Usage: python bench/vfio.py [--platform P]... [--kernel K]... [--kconfig NAME]... [--rounds 50]
       [--json]

Figures per platform and kernel: rounds inside the guest, in one helper process (what the
kernel and QEMU cost: VFIO_IOMMU_MAP_DMA, two edu transfers through the mapping, UNMAP), the
same through iommufd where the kernel has it (IOMMU_IOAS_MAP, the transfers, IOMMU_IOAS_UNMAP
on a device bound through its cdev: a source tree, --kernel DIR), and rounds as scenario steps
(one guest round trip per call through the long-lived helper, what a scenario pays). Prints the
machine: only ratios between rows of one run compare.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from harness.accel import _cpu_model
from harness.fuzz import has_iommufd
from harness.guest import Guest
from harness.prepare import GuestRequest, prepare
from harness.steps import VfioCall, bind_script

EDU0 = {"x86_64-vtd": "0000:00:03.0", "aarch64-smmuv3": "0000:00:03.0"}


def in_guest(guest: Guest, bdf: str, rounds: int) -> float:
    """Seconds per round through a container, timed in the guest around one helper process."""
    group = guest.check(f"basename $(readlink /sys/bus/pci/devices/{bdf}/iommu_group)").strip()
    setup = ["container", f"group {group}", f"set_container {group}", "set_iommu",
             f"device {group} {bdf}"]
    loop = ["map 0x100000 0x10000", f"dma {bdf} 0x100000 0x100", "unmap 0x100000 0x10000"]
    return _timed(guest, setup, loop, rounds)


def in_guest_iommufd(guest: Guest, bdf: str, rounds: int) -> float:
    """The same round through iommufd: an IOAS, the device bound through its cdev."""
    setup = ["iommufd_open", "iommufd_ioas a", f"iommufd_bind {bdf}"]
    loop = ["iommufd_map a 0x100000 0x10000", f"iommufd_dma {bdf} 0x100000 0x100",
            "iommufd_unmap a 0x100000 0x10000"]
    # attach once the IOAS maps something, then keep the domain across the rounds
    return _timed(guest, [*setup, "iommufd_map a 0x200000 0x1000", f"iommufd_attach {bdf} a"],
                  loop, rounds)


def _timed(guest: Guest, setup: list[str], loop: list[str], rounds: int) -> float:
    args = " ".join(f"'{c}'" for c in setup + loop * rounds)
    # busybox's date has no %N: /proc/uptime's hundredths, over many rounds
    out = guest.check(f"a=$(cut -d' ' -f1 /proc/uptime); ih-vfio {args} > /tmp/r; "
                      "b=$(cut -d' ' -f1 /proc/uptime); echo $a $b; "
                      "grep -c 'verified=1' /tmp/r; grep -c '^[a-z_]* 0' /tmp/r")
    a, b, verified, ok = out.split()
    assert int(verified) == rounds and int(ok) == len(setup) + 3 * rounds, out
    return (float(b) - float(a)) / rounds


def as_steps(guest: Guest, rounds: int) -> float:
    """Seconds per round when each call is a step: one control-channel round trip each."""
    bdfs = {"edu0": EDU0[guest.config.platform.name]}
    for line in ("vfio_container", "vfio_group edu0", "vfio_set_container edu0",
                 "vfio_set_iommu", "vfio_device edu0"):
        assert VfioCall(line).answer(guest.check(VfioCall(line).script(bdfs)))[0] == 0
    calls = [VfioCall(x) for x in ("vfio_map 0x100000 0x10000", "vfio_dma edu0 0x100000 0x100",
                                   "vfio_unmap 0x100000 0x10000")]
    started = time.perf_counter()
    for _ in range(rounds):
        for call in calls:
            assert call.answer(guest.check(call.script(bdfs)))[0] == 0
    return (time.perf_counter() - started) / rounds


def measure(platform: str, kernel: str, rounds: int,
            kconfig: tuple[str, ...]) -> dict[str, object]:
    config = prepare(GuestRequest(platform=platform, kernel=kernel, out_root=Path("out/bench"),
                                  kconfig=kconfig))
    bdf = EDU0[platform]
    with Guest(config) as guest:
        guest.check(bind_script(bdf, "vfio"))
        helper = in_guest(guest, bdf, rounds)
    iommufd = None
    if has_iommufd(config.kernel.config()):
        with Guest(config) as guest:
            guest.check(bind_script(bdf, "vfio"))
            iommufd = round(in_guest_iommufd(guest, bdf, rounds) * 1000, 2)
    with Guest(config) as guest:
        guest.check(bind_script(bdf, "vfio"))
        steps = as_steps(guest, rounds)
    return {"platform": platform, "kernel": config.kernel.release, "accel": config.accel,
            "cpu": _cpu_model(), "cores": os.cpu_count(), "rounds": rounds,
            "in_guest_ms": round(helper * 1000, 2), "iommufd_in_guest_ms": iommufd,
            "as_steps_ms": round(steps * 1000, 1),
            "steps_vs_in_guest": round(steps / helper, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", action="append")
    parser.add_argument("--kernel", action="append")
    parser.add_argument("--kconfig", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [measure(p, k, args.rounds, tuple(args.kconfig)) for p in args.platform or ["x86_64-vtd"]
            for k in args.kernel or ["debian:6.1"]]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"machine: {rows[0]['cpu']}, {rows[0]['cores']} cores")
    for r in rows:
        print(f"{r['platform']:<16} {r['kernel']:<24} {r['accel']:<4} map+dma+unmap: "
              f"{r['in_guest_ms']} ms in the guest, {r['as_steps_ms']} ms as three steps "
              f"(x{r['steps_vs_in_guest']})" + (
                  f"; through iommufd {r['iommufd_in_guest_ms']} ms in the guest"
                  if r["iommufd_in_guest_ms"] is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
