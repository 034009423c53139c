"""A throwaway git worktree of the user's kernel repository, for ``validate`` and ``bisect``.

The worktree lives in the cache (``<cache>/worktrees/<repo>``), one per repository, detached,
so that the user's checkout, index and bisect state are never touched, and reused from run to
run: its path stays the same, so its kernel build folder (keyed by the tree's path) rebuilds
incrementally. A lock keeps two runs out of one worktree at a time.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from . import cache
from .errors import ConfigError, HostToolError

IDENTITY = ("-c", "user.name=iommu-harness", "-c", "user.email=iommu-harness@localhost")


def git(repo: Path, *args: str, check: bool = True, timeout: float = 3600) -> str:
    """Run git in ``repo``; its stdout, or a one-line error with git's own message."""
    proc = subprocess.run(["git", "-C", str(repo), *IDENTITY, *args], capture_output=True,
                          text=True, errors="replace", stdin=subprocess.DEVNULL,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        message = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise HostToolError(f"git {' '.join(args[:3])} failed in {repo}: "
                            f"{' | '.join(message[-3:])}", "check the repository and the revisions")
    return proc.stdout


def try_git(repo: Path, *args: str, timeout: float = 3600) -> tuple[int, str]:
    """Run git in ``repo``; its exit code and all it printed (for commands that may fail)."""
    proc = subprocess.run(["git", "-C", str(repo), *IDENTITY, *args], capture_output=True,
                          text=True, errors="replace", stdin=subprocess.DEVNULL,
                          timeout=timeout, check=False)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def repository(path: Path) -> Path:
    """The top of the git repository a ``--kernel DIR`` names, or a one-line error."""
    tree = path.expanduser().resolve()
    proc = subprocess.run(["git", "-C", str(tree), "rev-parse", "--show-toplevel"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise ConfigError(f"{path} is not in a git repository",
                          "validate and bisect need the kernel tree's history: pass a git "
                          "checkout (a linux-source tarball's tree needs 'git init' and "
                          "'git add -f .', its .gitignore ignores every path)")
    return Path(proc.stdout.strip())


def commit_of(repo: Path, rev: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet",
                           f"{rev}^{{commit}}"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise ConfigError(f"{rev!r} is not a commit of {repo}",
                          "pass a commit, tag or branch name 'git log' shows")
    return proc.stdout.strip()


def subject(repo: Path, rev: str) -> str:
    return git(repo, "log", "-1", "--format=%h %s", rev).strip()


@contextlib.contextmanager
def scratch(repo: Path, start: str) -> Iterator[Path]:
    """A detached worktree of ``repo`` at ``start``, cleaned of any earlier run's state."""
    path = (cache.cache_root() / "worktrees" / cache.digest([str(repo)])).resolve()
    with cache.locked(path):
        # (no `git worktree prune`: it would drop the user's own worktrees that happen to be
        # missing; `add --force` takes over our path when it is registered but gone)
        listed = git(repo, "worktree", "list", "--porcelain")
        if f"worktree {path}\n" not in listed + "\n" or not (path / ".git").exists():
            if path.exists():
                subprocess.run(["rm", "-rf", str(path)], check=True)
            git(repo, "worktree", "add", "--detach", "--force", str(path), start)
        else:
            git(path, "bisect", "reset", check=False)
            git(path, "am", "--abort", check=False)
            git(path, "checkout", "--detach", "--force", "-q", start)
            git(path, "reset", "--hard", "-q", start)
            git(path, "clean", "-fdxq")
        yield path
        git(path, "bisect", "reset", check=False)
