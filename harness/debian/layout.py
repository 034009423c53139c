"""Unpacked Debian packages made usable where they are (pure file-tree fix-ups)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path


def usr_merge(root: Path) -> None:
    """Make ``lib``, ``bin`` and ``sbin`` links into ``usr/`` (what usr-merged Debian has), moving
    anything a classic package put at the top level. Idempotent."""
    for name in ("lib", "bin", "sbin"):
        top, under = root / name, root / "usr" / name
        under.mkdir(parents=True, exist_ok=True)
        if top.is_symlink():
            continue
        if top.is_dir():
            for child in top.iterdir():
                target = under / child.name
                if target.is_dir() and child.is_dir() and not child.is_symlink():
                    shutil.copytree(child, target, dirs_exist_ok=True, symlinks=True)
                    shutil.rmtree(child)
                else:
                    child.replace(target)
            top.rmdir()
        top.symlink_to(f"usr/{name}")


def relocate_headers(kbuild: Path) -> None:
    """Make an unpacked Debian headers tree usable where it is, not only under /usr/src.

    Its Makefile includes ``/usr/src/linux-headers-<abi>-common/Makefile`` (7.x also sets
    ``KBUILD_OUTPUT=/usr/src/linux-headers-<release>``); the absolute paths become paths
    relative to the Makefile itself. Idempotent.
    """
    makefile = kbuild / "Makefile"
    if not makefile.is_file():
        return
    text = makefile.read_text()
    here = "$(abspath $(dir $(lastword $(MAKEFILE_LIST))))"
    fixed = re.sub(r"^include /usr/src/(\S+)$", rf"include {here}/../\1", text, flags=re.M)
    # := so that MAKEFILE_LIST is read now, while this Makefile is its last word.
    fixed = re.sub(r"^KBUILD_OUTPUT\s*=\s*/usr/src/\S+$", f"KBUILD_OUTPUT := {here}", fixed,
                   flags=re.M)
    if fixed != text:
        makefile.write_text(fixed)
