"""The run's matrix (platforms × kernels × scenarios) as guest jobs, and its deterministic
slicing into shards for CI systems' own parallel jobs (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import ConfigError

# What booting a guest costs, in scenario runs (a boot is ~5 s, a scenario ~1 s, on TCG).
BOOT_WEIGHT = 5
FUZZ_STEPS_PER_SCENARIO = 8  # a random step costs about an eighth of a scenario


@dataclass(frozen=True)
class Job:
    """Scenarios that run one after the other on one guest."""
    platform: str
    kernel: str
    topology: Path
    scenarios: tuple[Path, ...]
    fuzz_steps: int = 0  # random steps after the scenarios (run --fuzz-steps)

    @property
    def key(self) -> tuple[str, str, str, tuple[str, ...], int]:
        return (self.platform, self.kernel, str(self.topology), tuple(map(str, self.scenarios)),
                self.fuzz_steps)

    @property
    def weight(self) -> int:
        return BOOT_WEIGHT + len(self.scenarios) + self.fuzz_steps // FUZZ_STEPS_PER_SCENARIO


def plan(platforms: Sequence[str], kernels: Sequence[str],
         scenarios: Iterable[tuple[str, Path, Path]], fuzz_steps: int = 0,
         fuzz_topology: Path | None = None) -> list[Job]:
    """One job per (platform, kernel, topology), scenarios in the order given;
    ``scenarios`` holds (platform, scenario file, its topology file) triples. With
    ``fuzz_steps`` the job of ``fuzz_topology`` on each platform and kernel fuzzes too."""
    by_topology: dict[tuple[str, Path], list[Path]] = {}
    for platform, path, topology in scenarios:
        by_topology.setdefault((platform, topology), []).append(path)
    if fuzz_steps and fuzz_topology is not None:
        for p in platforms:
            by_topology.setdefault((p, fuzz_topology), [])
    return [Job(p, k, topo, tuple(paths), fuzz_steps if topo == fuzz_topology else 0)
            for p in platforms for k in kernels
            for (plat, topo), paths in by_topology.items() if plat == p]


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` (1 ≤ I ≤ N) → (I, N)."""
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ConfigError(f"--shard {text!r} is not I/N with 1 <= I <= N",
                          "write e.g. --shard 2/4 for the second of four shards")
    return int(m.group(1)), int(m.group(2))


def _split(jobs: list[Job], count: int) -> list[Job]:
    """Halve the heaviest job until there are at least ``count`` jobs (or none can split)."""
    jobs = list(jobs)
    while len(jobs) < count:
        big = max((j for j in jobs if len(j.scenarios) > 1), key=lambda j: (j.weight, j.key),
                  default=None)
        if big is None:
            break
        half = (len(big.scenarios) + 1) // 2
        at = jobs.index(big)
        jobs[at:at + 1] = [replace(big, scenarios=big.scenarios[:half], fuzz_steps=0),
                           replace(big, scenarios=big.scenarios[half:])]
    return jobs


def shard(jobs: Sequence[Job], index: int, count: int) -> list[Job]:
    """The jobs of shard ``index`` of ``count``: every job lands in exactly one shard, the
    same one on every machine (heaviest first, onto the least loaded shard)."""
    units = _split(list(jobs), count)
    loads = [0] * count
    mine: list[Job] = []
    for job in sorted(units, key=lambda j: (-j.weight, j.key)):
        target = min(range(count), key=lambda i: (loads[i], i))
        loads[target] += job.weight
        if target == index - 1:
            mine.append(job)
    return sorted(mine, key=units.index)
