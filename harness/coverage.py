"""Rule coverage of a run: per model profile, the kernel branches (model/branches.py) its
scenario steps took and those no step took (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .model.branches import Branch, applicable
from .model.profiles import PROFILES
from .platforms import PLATFORMS

if TYPE_CHECKING:
    from .results import ScenarioResult


@dataclass(frozen=True)
class Coverage:
    profile: str
    platforms: tuple[str, ...]  # where the run used the profile
    taken: tuple[str, ...]  # branch ids, in registry order
    missed: tuple[Branch, ...]

    @property
    def total(self) -> int:
        return len(self.taken) + len(self.missed)


def coverage(runs: Sequence[ScenarioResult]) -> list[Coverage]:
    """For each profile the runs used (in order of first use): the branches applicable on the
    platforms it ran on, split into taken and missed."""
    out = []
    for name in dict.fromkeys(r.profile for r in runs):
        if name not in PROFILES:
            continue
        mine = [r for r in runs if r.profile == name]
        platforms = tuple(dict.fromkeys(r.platform for r in mine))
        hits = {b for r in mine for s in r.steps for b in s.branches}
        branches: dict[str, Branch] = {}
        for p in platforms:
            smmu = PLATFORMS[p].groups_need_driver if p in PLATFORMS else False
            branches.update((b.id, b) for b in applicable(PROFILES[name], smmu))
        out.append(Coverage(name, platforms, tuple(i for i in branches if i in hits),
                            tuple(b for i, b in branches.items() if i not in hits)))
    return out


def coverage_json(items: Sequence[Coverage]) -> list[dict[str, Any]]:
    return [{"profile": c.profile, "platforms": list(c.platforms), "taken": list(c.taken),
             "missed": [{"id": b.id, "source": b.source, "what": b.what} for b in c.missed]}
            for c in items]


def format_coverage(items: Sequence[Coverage]) -> str:
    lines = []
    for c in items:
        lines.append(f"rule coverage {c.profile} ({', '.join(c.platforms)}): "
                     f"{len(c.taken)}/{c.total} kernel branches taken"
                     + (f"; never: {', '.join(b.id for b in c.missed)}" if c.missed else ""))
    return "\n".join(lines)
