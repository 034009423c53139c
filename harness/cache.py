"""The on-disk cache: kernels, images and verdicts, shared safely between concurrent runs.

Entries are directories published atomically: built in a private temporary directory next to
their final place, then renamed. A per-entry ``flock`` keeps two harness runs from building the
same entry twice; the loser of the race finds the winner's result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

ENV_CACHE = "IOMMU_HARNESS_CACHE"


def cache_root() -> Path:
    """``$IOMMU_HARNESS_CACHE``, else ``~/.cache/iommu-harness``."""
    override = os.environ.get(ENV_CACHE)
    root = Path(override) if override else Path.home() / ".cache" / "iommu-harness"
    root.mkdir(parents=True, exist_ok=True)
    return root


def digest(parts: Iterable[bytes | str]) -> str:
    """A short stable hash of an ordered sequence of parts (length-prefixed, so unambiguous)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:20]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path.lock`` for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_dir(final: Path, build: Callable[[Path], None]) -> Path:
    """Return ``final``, building it first with ``build(tmpdir)`` if it is not there yet.

    ``build`` fills an empty temporary directory; on success it is renamed to ``final``. On
    failure nothing is published and the temporary directory is removed.
    """
    if final.is_dir():
        return final
    with locked(final):
        if final.is_dir():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            build(tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def ensure_file(final: Path, build: Callable[[Path], object]) -> Path:
    """Like :func:`ensure_dir` for a single file: ``build(tmpfile)`` writes it."""
    if final.is_file():
        return final
    with locked(final):
        if final.is_file():
            return final
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", dir=final.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            build(tmp)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return final
