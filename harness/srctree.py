"""A kernel source tree as the user gave it: is it one, and what state is it in.

The state names what a build of the tree would contain: the commit checked out plus a hash of
every uncommitted change (``git diff HEAD`` and the untracked files git does not ignore), so a
tree seen before is recognised and an edited one is not. A tree outside git is named by the
size and modification time of every file in it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

# What makes a directory a kernel tree the harness can configure and build.
TREE_MARKERS = ("Makefile", "Kconfig", "arch", "scripts/kconfig/merge_config.sh")


@dataclass(frozen=True)
class TreeState:
    commit: str | None  # HEAD, or None outside git
    changes: str  # a digest of uncommitted changes ("" for a clean git tree)

    @property
    def key(self) -> str:
        return f"{self.commit or 'nogit'}-{self.changes or 'clean'}"

    def describe(self) -> str:
        if self.commit is None:
            return f"not in git, files {self.changes[:12]}"
        short = self.commit[:12]
        return short if not self.changes else f"{short} + uncommitted {self.changes[:8]}"


def looks_like_tree(path: Path) -> bool:
    return path.is_dir() and all((path / m).exists() for m in TREE_MARKERS)


def check_tree(path: Path) -> Path:
    """The tree's resolved path, or a one-line error naming what is missing."""
    tree = path.expanduser().resolve()
    if not tree.is_dir():
        raise ConfigError(f"kernel tree {path} does not exist",
                          "pass the top directory of a Linux source tree")
    missing = [m for m in TREE_MARKERS if not (tree / m).exists()]
    if missing:
        raise ConfigError(f"{path} is not a Linux source tree (no {', '.join(missing)})",
                          "pass the top directory of a kernel tree, or an image file with "
                          "--headers")
    if (tree / ".config").exists() or (tree / "include" / "config").is_dir():
        raise ConfigError(f"kernel tree {path} has been configured or built in place",
                          f"run 'make -C {path} mrproper': the harness builds out of tree (O=), "
                          "which kbuild refuses next to an in-tree build")
    return tree


def _git(tree: Path, *args: str) -> bytes:
    result = subprocess.run(["git", "-C", str(tree), *args], capture_output=True,
                            stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise ConfigError(f"git {' '.join(args)} failed in {tree}: "
                          f"{result.stderr.decode(errors='replace').strip()[-300:]}",
                          "check the repository with 'git status'")
    return result.stdout


def in_git(tree: Path) -> bool:
    result = subprocess.run(["git", "-C", str(tree), "rev-parse", "--show-toplevel"],
                            capture_output=True, stdin=subprocess.DEVNULL, check=False)
    return result.returncode == 0 and Path(result.stdout.decode().strip()).resolve() == tree


def tree_state(tree: Path) -> TreeState:
    """The state of ``tree`` (see the module's doc)."""
    if not in_git(tree):
        return TreeState(None, _walk_digest(tree))
    commit = _git(tree, "rev-parse", "HEAD").decode().strip()
    h = hashlib.sha256()
    diff = _git(tree, "diff", "--binary", "HEAD")
    h.update(diff)
    untracked = [p for p in _git(tree, "ls-files", "-z", "--others", "--exclude-standard")
                 .split(b"\0") if p]
    for rel in sorted(untracked):
        h.update(rel + b"\0")
        path = tree / os.fsdecode(rel)
        if path.is_file():
            h.update(path.read_bytes())
    changes = "" if not diff and not untracked else h.hexdigest()[:20]
    return TreeState(commit, changes)


def _walk_digest(tree: Path) -> str:
    h = hashlib.sha256()
    for root, dirs, files in os.walk(tree):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(files):
            st = os.lstat(os.path.join(root, name))
            h.update(f"{os.path.relpath(root, tree)}/{name}\0{st.st_size}\0"
                     f"{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:20]
