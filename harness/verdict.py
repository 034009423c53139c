"""Verdicts on kernel events (pure): unexpected splats fail, declared expectations must appear.

An expectation is an event kind (``"warning"``, ``"dmar_fault"``), a full signature
(``"warning:ih_smoke_init"``), or a signature prefix ending at a ``:`` boundary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .dmesg import Event


def matches(event: Event, pattern: str) -> bool:
    return (pattern in (event.kind, event.signature)
            or event.signature.startswith(pattern + ":"))


@dataclass(frozen=True)
class Verdict:
    unexpected: tuple[Event, ...]
    missing: tuple[str, ...]
    expected: tuple[Event, ...]

    @property
    def ok(self) -> bool:
        return not self.unexpected and not self.missing

    def explain(self, where: str = "") -> str:
        """A failure message: each problem, then the unexpected reports themselves."""
        head = f" in {where}" if where else ""
        parts = [f"unexpected kernel {e.kind}{head}: {e.signature} ({e.summary[:160]})"
                 for e in self.unexpected]
        parts += [f"expected kernel event {m!r}{head} did not appear" for m in self.missing]
        for e in self.unexpected:
            parts.append("\n".join(["--- " + e.signature, *e.lines[:60]]))
        return "\n".join(parts)


def judge(events: Iterable[Event], expect: Sequence[str] = ()) -> Verdict:
    events = list(events)
    expected = tuple(e for e in events if any(matches(e, p) for p in expect))
    unexpected = tuple(e for e in events if e.is_splat and e not in expected)
    missing = tuple(p for p in expect if not any(matches(e, p) for e in events))
    return Verdict(unexpected, missing, expected)
