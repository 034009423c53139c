"""End to end on a real kernel tree (``make test-slow``): Debian's linux-source-6.1 as a git
repository, built by the harness from our fragments (``--kernel DIR`` is what validate and
bisect run on each side and commit); a series with one commit that lets
iommu_attach_device() take a multi-device group. ``validate`` flags the series and names that
patch; ``bisect`` names that commit; with a commit that does not build after it, bisect skips
that commit and still names the breaking one. Everything through the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.slow import linux_repo as lr

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "tests" / "scenarios" / "attach-device-refused-multi-device-group.toml"
CONTROL = ROOT / "tests" / "scenarios" / "singleton-attach-detach.toml"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=3600,
                          check=False)
    sys.stdout.write(proc.stdout[-4000:])
    sys.stderr.write(proc.stderr[-4000:])
    return proc


@pytest.fixture(scope="module")
def repo() -> Path:
    return lr.base_repository()


@pytest.fixture(scope="module")
def broken(repo: Path) -> list[str]:
    """base → a README note, a comment in iommu.c, the breaking commit, another note."""
    return lr.series(repo, "broken", [lr.HARMLESS_README, lr.HARMLESS_COMMENT, lr.BREAKING,
                                      lr.HARMLESS_AFTER])


def test_validate_flags_the_series_and_names_the_patch(repo: Path, broken: list[str],
                                                       tmp_path: Path) -> None:
    mbox = tmp_path / "series.mbox"
    mbox.write_text(subprocess.run(["git", "-C", str(repo), "format-patch", "--stdout",
                                    f"base..{broken[-1]}"], capture_output=True, text=True,
                                   check=True).stdout)
    before = _user_state(repo)
    out = tmp_path / "validate"
    proc = cli("validate", "--kernel", str(repo), "--base", "base", "--series", str(mbox),
               "--per-patch", "--scenario", str(SCENARIO), str(CONTROL), "--fuzz-steps", "10",
               "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "newly failing (" in proc.stdout  # the scenario, and the fuzz budget may catch it too
    assert "attach_device refused on a multi-device group: pass -> fail" in proc.stdout
    assert "step 2 attach_dev d edu2: disagree: kernel returned 0" in proc.stdout
    # git am makes new commits (its committer date is now): the patch is named by subject
    changed = next(ln for ln in proc.stdout.splitlines()
                   if ln.startswith("first patch that changed the result: "))
    assert changed.endswith(lr.BREAKING[0])
    # each side ran on the tree as built from our fragments, and says which state it was
    base_run = json.loads((out / "base" / "results.json").read_text())["runs"][0]
    assert base_run["release"].startswith("6.1.")
    base_sha = _git(repo, "rev-parse", "base")[:12]
    assert f" at {base_sha}" in base_run["kernel_resolved"]["source"]
    report = json.loads((out / "validate.json").read_text())
    assert report["worse"] and [p["builds"] for p in report["prefixes"]] == [True] * 4
    assert [p["changed"] for p in report["prefixes"]] == [False, False, True, True]
    assert _user_state(repo) == before


def test_bisect_names_the_breaking_commit(repo: Path, broken: list[str], tmp_path: Path) -> None:
    before = _user_state(repo)
    proc = cli("bisect", "--kernel", str(repo), "--good", "base", "--bad", broken[-1],
               "--scenario", str(SCENARIO), "--out", str(tmp_path / "bisect"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"bisect: first bad commit: {broken[2][:7]}" in proc.stdout
    assert "step 2 attach_dev d edu2" in proc.stdout  # the signature
    result = json.loads((tmp_path / "bisect" / "result.json").read_text())
    assert result["first_bad"] == broken[2]
    assert {s["verdict"] for s in result["steps"]} <= {"good", "bad"}
    assert _user_state(repo) == before


def test_bisect_skips_a_commit_that_does_not_build(repo: Path, tmp_path: Path) -> None:
    commits = lr.series(repo, "unbuildable", [lr.HARMLESS_README, lr.BREAKING, lr.NOT_BUILDING,
                                              lr.BUILDS_AGAIN, lr.HARMLESS_AFTER,
                                              lr.HARMLESS_LAST])
    proc = cli("bisect", "--kernel", str(repo), "--good", "base", "--bad", commits[-1],
               "--scenario", str(SCENARIO), "--out", str(tmp_path / "bisect"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "bisect" / "result.json").read_text())
    assert result["first_bad"] == commits[1]
    skipped = [s for s in result["steps"] if s["verdict"] == "skip"]
    assert [s["commit"] for s in skipped] == [commits[2]]
    assert "does not build" in skipped[0]["why"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout


def _user_state(repo: Path) -> Sequence[str]:
    """What validate and bisect must leave as it was: HEAD, the index, the work tree."""
    return (_git(repo, "rev-parse", "HEAD"), _git(repo, "status", "--porcelain"),
            _git(repo, "bisect", "log") if (repo / ".git" / "BISECT_LOG").exists() else "")
