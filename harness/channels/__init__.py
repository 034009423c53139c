"""Guest I/O: one :class:`Shell` protocol, two transports (serial control console and SSH)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Result:
    """What a guest command gave back: its exact output bytes and exit code."""

    stdout: bytes
    stderr: bytes
    exit_code: int

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Shell(Protocol):
    """Runs one shell command in the guest (a fresh ``sh``; no state carries over)."""

    name: str

    def run(self, command: str, timeout: float = 60.0) -> Result: ...

    def close(self) -> None: ...
