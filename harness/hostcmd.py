"""Running host programs: a literal argv, a clear error naming the program and the fix."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .errors import HostToolError

# Which Debian package provides each host program the harness runs (for the error message).
PROVIDERS = {
    "apt-get": "apt", "apt-cache": "apt", "dpkg": "dpkg", "depmod": "kmod",
    "qemu-system-x86_64": "qemu-system-x86", "qemu-system-aarch64": "qemu-system-arm",
    "dropbearkey": "dropbear-bin", "zstd": "zstd", "make": "make",
}


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pkg = PROVIDERS.get(name, name)
        raise HostToolError(f"host program {name!r} is missing",
                            f"run 'make deps' or 'apt-get install {pkg}'")
    return path


def run(argv: Sequence[str], *, cwd: Path | None = None, timeout: float = 600.0,
        what: str = "") -> str:
    """Run ``argv``; return its stdout; raise :class:`HostToolError` with its stderr on failure."""
    return run_bytes(argv, cwd=cwd, timeout=timeout, what=what).decode(errors="replace")


def run_bytes(argv: Sequence[str], *, cwd: Path | None = None, timeout: float = 600.0,
              what: str = "") -> bytes:
    require_tool(argv[0])
    try:
        proc = subprocess.run(list(argv), cwd=cwd, capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        raise HostToolError(f"{what or argv[0]} timed out after {timeout:.0f}s: "
                            f"{shlex.join(argv)}") from exc
    if proc.returncode != 0:
        tail = " | ".join(failure_lines(proc.stderr.decode(errors="replace")))
        raise HostToolError(f"{what or argv[0]} failed (exit {proc.returncode}): {tail}",
                            f"command was: {shlex.join(argv)}")
    return proc.stdout


def failure_lines(stderr: str, keep: int = 3) -> list[str]:
    """What to show of a failed program's stderr: its first ``error:`` lines (a compiler's,
    which make's closing "Error 2" lines would otherwise hide), else its last lines."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line.lower() and "***" not in line]
    return errors[:keep] if errors else lines[-keep:]
