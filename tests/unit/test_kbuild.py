"""A source tree's state (the build cache's key) on small git repositories, the build plan's
make argv and key, the failure summary of a build log; the worktree on a small repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.kbuild import BuildPlan, failure_summary, progress_line
from harness.kernel import resolve_kernel
from harness.kfragments import fragment_files
from harness.platforms import PLATFORMS
from harness.srctree import check_tree, tree_state
from harness.worktree import commit_of, git, repository, scratch


def fake_tree(root: Path) -> Path:
    """What makes a directory a kernel tree to the harness, nothing more."""
    (root / "arch").mkdir(parents=True)
    (root / "scripts" / "kconfig").mkdir(parents=True)
    (root / "scripts" / "kconfig" / "merge_config.sh").write_text("#!/bin/sh\n")
    (root / "Makefile").write_text("all:\n")
    (root / "Kconfig").write_text("mainmenu \"x\"\n")
    return root


def commit_all(tree: Path, message: str) -> None:
    git(tree, "add", "-A")
    git(tree, "commit", "-qm", message)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    tree = fake_tree(tmp_path / "linux")
    git(tree, "init", "-q")
    commit_all(tree, "base")
    return tree


def test_a_clean_tree_is_named_by_its_commit(repo: Path) -> None:
    state = tree_state(repo)
    assert state.commit == git(repo, "rev-parse", "HEAD").strip()
    assert state.changes == "" and state.key.endswith("-clean")
    assert tree_state(repo) == state


def test_every_kind_of_change_is_a_new_state(repo: Path) -> None:
    clean = tree_state(repo)
    (repo / "Makefile").write_text("all:\n\ttrue\n")
    edited = tree_state(repo)
    assert edited.commit == clean.commit and edited.changes and edited != clean
    (repo / "new.c").write_text("int x;\n")
    untracked = tree_state(repo)
    assert untracked not in (clean, edited)
    (repo / "new.c").write_text("int y;\n")
    assert tree_state(repo) != untracked  # the untracked file's content counts
    git(repo, "add", "-A")
    assert tree_state(repo).changes  # staged is still uncommitted
    commit_all(repo, "next")
    committed = tree_state(repo)
    assert committed.changes == "" and committed.commit != clean.commit
    assert "uncommitted" in edited.describe() and "uncommitted" not in committed.describe()


def test_a_tree_outside_git_is_named_by_its_files(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "plain")
    first = tree_state(tree)
    assert first.commit is None and first.key.startswith("nogit-")
    (tree / "Makefile").write_text("all:\n\ttrue\n")
    assert tree_state(tree) != first


def test_what_is_not_a_tree_is_refused_in_one_line(tmp_path: Path, repo: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        check_tree(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"not a Linux source tree \(no Makefile, Kconfig"):
        check_tree(tmp_path / "empty")
    (repo / ".config").write_text("CONFIG_X=y\n")
    with pytest.raises(ConfigError, match="mrproper"):
        check_tree(repo)


def test_kconfig_goes_with_a_tree_only(tmp_path: Path) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(b"x")
    with pytest.raises(ConfigError, match="--kconfig debug goes with a kernel source tree"):
        resolve_kernel(str(image), PLATFORMS["x86_64-vtd"], kconfig=("debug",))
    with pytest.raises(ConfigError, match="--headers and --modules go with a kernel image"):
        resolve_kernel(str(tmp_path), PLATFORMS["x86_64-vtd"], headers=tmp_path)


def plan(tree: Path, arch: str = "x86_64", extras: tuple[str, ...] = ()) -> BuildPlan:
    return BuildPlan(tree, arch, tuple(fragment_files(arch, extras)), jobs=2)


def test_make_argv_native_and_cross(tmp_path: Path) -> None:
    native = plan(tmp_path).make_argv(tmp_path / "o", "bzImage", host_arch="x86_64")
    assert native[:4] == ["make", "-C", str(tmp_path), f"O={tmp_path / 'o'}"]
    assert "ARCH=x86" in native and "CC=ccache gcc" in native and native[-1] == "bzImage"
    assert not any(a.startswith("CROSS_COMPILE=") for a in native)
    cross = plan(tmp_path, "aarch64").make_argv(tmp_path / "o", "Image", host_arch="x86_64")
    assert "ARCH=arm64" in cross and "CROSS_COMPILE=aarch64-linux-gnu-" in cross
    assert "CC=ccache aarch64-linux-gnu-gcc" in cross and "HOSTCC=ccache gcc" in cross


def test_the_build_folder_key(tmp_path: Path) -> None:
    base = plan(tmp_path).key
    assert plan(tmp_path).key == base
    assert plan(tmp_path, "aarch64").key != base
    assert plan(tmp_path, extras=("debug",)).key != base
    assert plan(tmp_path / "other").key != base


def test_a_failed_build_shows_the_compiler_error() -> None:
    log = ["  CC      drivers/iommu/iommu.o",
           "drivers/iommu/iommu.c:12:1: error: expected ';' before 'int'",
           "make[4]: *** [scripts/Makefile.build:250: drivers/iommu/iommu.o] Error 1",
           "make: *** [Makefile:2012: .] Error 2"]
    assert failure_summary(log) == "drivers/iommu/iommu.c:12:1: error: expected ';' before 'int'"
    assert failure_summary(["a", "b", "", "c"], keep=2) == "c"
    assert progress_line("building x", 12, 75.0) == "iommu-harness: building x: 12 steps, 1m15s"
    assert progress_line("x", 1, 659.6).endswith("11m00s")  # never 10m60s


# ------------------------------------------------------------------------------- worktree

def test_the_worktree_leaves_the_users_checkout_alone(repo: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOMMU_HARNESS_CACHE", str(tmp_path / "cache"))
    base = commit_of(repo, "HEAD")
    (repo / "Makefile").write_text("all:\n\tuser edit\n")  # the user's uncommitted work
    with scratch(repo, base) as tree:
        assert tree != repo and (tree / "Makefile").read_text() == "all:\n"
        (tree / "junk").write_text("x")
        git(tree, "commit", "--allow-empty", "-qm", "in the worktree")
        first = tree
    with scratch(repo, base) as tree:  # reused, and clean again
        assert tree == first and not (tree / "junk").exists()
        assert git(tree, "rev-parse", "HEAD").strip() == base
    assert (repo / "Makefile").read_text() == "all:\n\tuser edit\n"
    assert git(repo, "rev-parse", "HEAD").strip() == base
    assert repository(repo / "arch") == repo
    with pytest.raises(ConfigError, match="is not a commit"):
        commit_of(repo, "no-such-rev")
    with pytest.raises(ConfigError, match="not in a git repository"):
        repository(fake_tree(tmp_path / "plain"))
