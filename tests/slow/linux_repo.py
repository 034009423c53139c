"""A real kernel repository for the slow tests: Debian's linux-source-6.1 committed as a base,
and series on top made with fixed dates, so that every run makes the same commits (and so
finds its builds in the cache)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from harness import cache
from harness.debian.apt import download_packages
from harness.worktree import git

PACKAGE = "linux-source-6.1"
DATE = "2026-01-01T00:00:00+0000"
IOMMU_C = "drivers/iommu/iommu.c"
# iommu_attach_device() on 6.1 refuses a group of more than one device (drivers/iommu/iommu.c,
# Debian's 6.1.192); the breaking commit lets it through.
REFUSAL = "\tif (iommu_group_device_count(group) != 1)\n\t\tgoto out_unlock;\n\n" \
          "\tret = __iommu_attach_group(domain, group);"
LET_THROUGH = REFUSAL.replace("!= 1", "< 1")


def _env() -> dict[str, str]:
    return {"GIT_AUTHOR_DATE": DATE, "GIT_COMMITTER_DATE": DATE, "GIT_AUTHOR_NAME": "harness",
            "GIT_AUTHOR_EMAIL": "harness@localhost", "GIT_COMMITTER_NAME": "harness",
            "GIT_COMMITTER_EMAIL": "harness@localhost", "PATH": "/usr/bin:/bin"}


def _run(argv: list[str], cwd: Path) -> None:
    subprocess.run(argv, cwd=cwd, check=True, env=_env(), stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL)


def unpack(package: str, tmp: Path) -> tuple[Path, str]:
    """Debian's ``package`` (linux-source-X.Y) fetched with the harness's apt configuration and
    its tarball unpacked into ``tmp/tree``; the .deb and the tarball removed. The tree and the
    .deb's name."""
    download_packages([package], tmp, package)
    deb = next(tmp.glob(f"{package}_*.deb"))
    member = f"./usr/src/{package}.tar.xz"
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as p:
        subprocess.run(["tar", "-x", "-C", str(tmp), member], stdin=p.stdout, check=True)
    tree = tmp / "tree"
    tree.mkdir()
    _run(["tar", "-xJf", str(tmp / member), "--strip-components=1", "-C", str(tree)], tmp)
    subprocess.run(["rm", "-rf", str(tmp / "usr"), str(deb)], check=True)
    return tree, deb.name


def _flatten(tmp: Path, tree: Path) -> None:
    for item in tree.iterdir():
        item.rename(tmp / item.name)
    tree.rmdir()


def base_repository() -> Path:
    """``<cache>/slow/linux-6.1``: the tarball's tree, every file added (its .gitignore ignores
    every path) and committed once as ``base``; made on first use."""
    final = cache.cache_root() / "slow" / "linux-6.1"
    final.parent.mkdir(parents=True, exist_ok=True)

    def make(tmp: Path) -> None:
        tree, deb = unpack(PACKAGE, tmp)
        _run(["git", "init", "-q", "-b", "main"], tree)
        _run(["git", "add", "-f", "."], tree)
        _run(["git", "commit", "-qm", f"base: Debian's {deb}"], tree)
        _run(["git", "tag", "base"], tree)
        _flatten(tmp, tree)

    return cache.ensure_dir(final, make)


def plain_tree(package: str) -> Path:
    """``<cache>/slow/<package>``: the tarball's tree, not in git; made on first use."""
    final = cache.cache_root() / "slow" / package
    final.parent.mkdir(parents=True, exist_ok=True)

    def make(tmp: Path) -> None:
        tree, _ = unpack(package, tmp)
        _flatten(tmp, tree)

    return cache.ensure_dir(final, make)


Edit = Callable[[Path], None]


def append(path: str, text: str) -> Edit:
    def edit(tree: Path) -> None:
        with (tree / path).open("a") as f:
            f.write(text)
    return edit


def replace(path: str, old: str, new: str) -> Edit:
    def edit(tree: Path) -> None:
        text = (tree / path).read_text()
        assert old in text, f"{old!r} is not in {path}"
        (tree / path).write_text(text.replace(old, new, 1))
    return edit


def series(repo: Path, branch: str, commits: list[tuple[str, Edit]]) -> list[str]:
    """Branch ``branch`` from ``base`` with one commit per (subject, edit); the commits."""
    _run(["git", "checkout", "-q", "-f", "-B", branch, "base"], repo)
    made = []
    for subject, edit in commits:
        edit(repo)
        _run(["git", "add", "-f", "-A", "."], repo)
        _run(["git", "commit", "-qm", subject], repo)
        made.append(git(repo, "rev-parse", "HEAD").strip())
    _run(["git", "checkout", "-q", "-f", "base"], repo)
    return made


HARMLESS_README = ("docs: a harmless note", append("README", "\nA harmless note.\n"))
HARMLESS_COMMENT = ("iommu: a harmless comment",
                    append(IOMMU_C, "\n/* a harmless comment */\n"))
BREAKING = ("iommu: let iommu_attach_device() take multi-device groups",
            replace(IOMMU_C, REFUSAL, LET_THROUGH))
NOT_BUILDING = ("iommu: a commit that does not build",
                append(IOMMU_C, "\nint harness_does_not_build = ;\n"))
BUILDS_AGAIN = ("iommu: build again",
                replace(IOMMU_C, "\nint harness_does_not_build = ;\n", "\n"))
HARMLESS_AFTER = ("docs: another harmless note", append("README", "\nAnother one.\n"))
HARMLESS_LAST = ("docs: the last harmless note", append("README", "\nThe last one.\n"))
