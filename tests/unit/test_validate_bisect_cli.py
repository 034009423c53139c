"""validate and bisect on the command line: bad input is one line and exit 2 before anything is
built; bisect-step's exit codes as git bisect reads them (a commit that does not build is 125,
a harness error 255, never 1)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness.bisect import STEPS_FILE, spec_json, step_argv
from harness.cli import main
from harness.treerun import TreeRun
from harness.worktree import git
from tests.unit.test_kbuild import commit_all, fake_tree

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "singleton-attach-detach.toml"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IOMMU_HARNESS_CACHE", str(tmp_path / "cache"))
    tree = fake_tree(tmp_path / "linux")
    git(tree, "init", "-q")
    commit_all(tree, "one")
    (tree / "README").write_text("two\n")
    commit_all(tree, "two")
    return tree


def one_line_error(capsys: pytest.CaptureFixture[str], code: int, text: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and text in err[0], err


def test_validate_refuses_bad_input_in_one_line(repo: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    mbox = tmp_path / "s.mbox"
    mbox.write_text("")
    (tmp_path / "plain").mkdir()
    base = ["--base", "HEAD~1", "--series", str(mbox), "--out", str(tmp_path / "o")]
    one_line_error(capsys, main(["validate", "--kernel", str(tmp_path / "plain"), *base]),
                   "is not in a git repository")
    one_line_error(capsys, main(["validate", "--kernel", str(repo), "--base", "v9.9",
                                 "--series", str(mbox)]), "'v9.9' is not a commit")
    one_line_error(capsys, main(["validate", "--kernel", str(repo), "--base", "HEAD",
                                 "--series", str(tmp_path / "none.mbox")]),
                   "none.mbox does not exist")
    one_line_error(capsys, main(["validate", "--kernel", str(repo), *base, "--scenario",
                                 str(tmp_path / "none.toml")]), "none.toml")
    assert not (tmp_path / "cache" / "kbuild").exists()  # nothing was built


def test_bisect_refuses_bad_input_in_one_line(repo: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bisect", "--kernel", str(repo), "--scenario", str(SCENARIO)]
    one_line_error(capsys, main([*args, "--good", "HEAD", "--bad", "HEAD~1"]),
                   "is not an ancestor of --bad")
    one_line_error(capsys, main([*args, "--good", "HEAD~1", "--bad", "HEAD", "--repeat", "0"]),
                   "--repeat 0")
    assert not (tmp_path / "cache" / "kbuild").exists()


def state_file(tmp_path: Path, spec: TreeRun) -> Path:
    state = tmp_path / "bisect.json"
    state.write_text(json.dumps({"signature": "x", "baseline": [], "repeat": 1,
                                 "out": str(tmp_path), "spec": spec_json(spec)}))
    return state


def test_a_commit_that_does_not_build_is_skipped(repo: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake tree's Makefile has no tinyconfig: its configuration fails like a broken
    commit's would."""
    spec = TreeRun(platforms=("x86_64-vtd",), scenarios=(SCENARIO,), quiet=True)
    monkeypatch.chdir(repo)
    assert main(["bisect-step", "--state", str(state_file(tmp_path, spec))]) == 125
    step = json.loads((tmp_path / STEPS_FILE).read_text())
    assert step["verdict"] == "skip" and step["why"].startswith("does not build: ")
    assert step["commit"] == git(repo, "rev-parse", "HEAD").strip()


def test_a_harness_error_in_a_step_stops_git_bisect(repo: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    spec = TreeRun(platforms=("no-such-platform",), scenarios=(SCENARIO,), quiet=True)
    monkeypatch.chdir(repo)
    assert main(["bisect-step", "--state", str(state_file(tmp_path, spec))]) == 255
    step = json.loads((tmp_path / STEPS_FILE).read_text())
    assert step["verdict"] == "error"


@pytest.mark.parametrize(("code", "seen"), [(0, 0), (1, 1), (125, 125), (2, 255), (126, 255),
                                            (127, 255), (130, 255)])
def test_the_step_guard_passes_only_verdicts(code: int, seen: int) -> None:
    """git bisect run reads 1-127 (but 125) as bad: anything else the step exits with (a
    Python error before its own handlers, an interrupted step) must stop it (255)."""
    argv = step_argv(Path("/nonexistent"))
    guarded = [*argv[:4], "sh", "-c", f"exit {code}"]
    assert subprocess.run(guarded, check=False).returncode == seen
