"""Helpers for integration tests: the kernel matrix, and finding the QEMU a harness process
started."""

from __future__ import annotations

import os
import time
from pathlib import Path

from harness.debian.fetch import resolve_spec
from harness.model.profiles import SERIES, release_series

# The Debian kernels every module, catalogue and fuzzing test runs on: the two long-term series
# and the newest series the model has a profile for. $IOMMU_HARNESS_TEST_KERNELS (a comma list
# of specs, e.g. debian:newest) replaces them, for a nightly run against tonight's kernel.
KERNELS: tuple[str, ...] = tuple(
    k.strip() for k in os.environ.get("IOMMU_HARNESS_TEST_KERNELS",
                                      "debian:6.1,debian:6.12,debian:7.2").split(",")
    if k.strip())


def children_named(parent: int, prefix: str = "qemu-system") -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == parent and comm.startswith(prefix[:15]):
            found.append(int(entry.name))
    return found


def all_qemu() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().startswith("qemu-system"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def wait_gone(pid: int, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def spec_profile(spec: str) -> str:
    """The model profile a Debian kernel spec's kernel gets, by its series (debian:newest and
    debian:rc resolved now): the catalogue generates only the pairs a scenario admits."""
    what = spec.removeprefix("debian:")
    if what in ("newest", "rc"):
        what = resolve_spec(spec, "amd64").series
    version = release_series(what)
    older = [p for v, p in SERIES if v <= version]
    return older[-1].name if older else ""
