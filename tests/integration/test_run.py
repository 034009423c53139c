"""``iommu-harness run`` end to end: a small matrix on real guests (two in parallel), its
output folder (results.json, junit.xml, report.html), shards merged with ``report merge``, the
page in a real browser (headless Chromium), and bad input refused before any guest boots."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lxml import etree

from harness.results import Outcome, load_results
from tests.integration.helpers import all_qemu

HARNESS = [sys.executable, "-m", "harness.cli"]
ROOT = Path(__file__).parent.parent
SCENARIOS = [ROOT / "scenarios" / "singleton-attach-detach.toml",
             ROOT / "scenarios" / "smmu-groups-at-device-add-7x.toml"]


def harness(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HARNESS, *args], capture_output=True, text=True, timeout=timeout,
                          check=False, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both platforms × debian:6.1 × two scenarios and 20 random steps, two guests at once."""
    out = tmp_path_factory.mktemp("run")
    proc = harness("run", "--platform", "all", "--kernel", "debian:6.1", "--scenario",
                   *map(str, SCENARIOS), "--fuzz-steps", "20", "-j", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"report: {out / 'report.html'}" in proc.stdout
    return out


def test_the_run_writes_its_results(matrix_run: Path) -> None:
    results = load_results(matrix_run)
    fuzz = [r for r in results.runs if r.file == "fuzz:0"]
    assert [(r.platform, r.outcome) for r in fuzz] == [("x86_64-vtd", Outcome.PASS),
                                                       ("aarch64-smmuv3", Outcome.PASS)]
    assert all(len(r.steps) >= 20 and r.scenario == "fuzz (20 steps, seed 0)" for r in fuzz)
    cells = {(r.platform, r.kernel, Path(r.file).name): r.outcome for r in results.runs
             if r not in fuzz}
    # The 7.x scenario is written for linux-7.2 only: skipped on 6.1, with the reason.
    assert cells == {(p, "debian:6.1", s.name): (Outcome.PASS if "7x" not in s.name
                                                  else Outcome.SKIPPED)
                     for p in ("x86_64-vtd", "aarch64-smmuv3") for s in SCENARIOS}
    ran = [r for r in results.runs if r.outcome is Outcome.PASS]
    assert all(r.release.startswith("6.1.") and r.steps and r.kernel_log for r in ran)
    assert all(Path(r.console_log).is_file() for r in ran)
    assert results.host["cpus"] and results.started <= results.finished


def test_the_children_ran_disjoint_slices(matrix_run: Path) -> None:
    parts = [load_results(p) for p in sorted((matrix_run / "parts").iterdir())]
    assert len(parts) == 2 and all(p.runs for p in parts)
    assert {r.platform for r in parts[0].runs}.isdisjoint({r.platform for r in parts[1].runs})


def test_report_merge_joins_the_shards(matrix_run: Path, tmp_path: Path) -> None:
    proc = harness("report", "merge", *map(str, sorted((matrix_run / "parts").iterdir())),
                   "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert load_results(tmp_path).runs == load_results(matrix_run).runs
    assert "6 scenario runs: 2 skipped, 4 pass" in proc.stdout


def test_junit_names_every_case(matrix_run: Path) -> None:
    root = etree.parse(str(matrix_run / "junit.xml")).getroot()
    etree.XMLSchema(etree.parse(str(ROOT / "data" / "junit.xsd"))).assertValid(root)
    assert root.get("tests") == "6" and root.get("failures") == "0"
    assert root.get("skipped") == "2"


def qemu_using(folder: Path) -> list[int]:
    """QEMU processes whose command line names a path under ``folder``."""
    found = []
    for pid in all_qemu():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(folder).encode() in a for a in argv):
            found.append(pid)
    return found


CHROMIUM = shutil.which("chromium")


def _browser(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None, "chromium is installed by images/setup-host.sh"
    # --no-sandbox: the page is our own file, and the sandbox refuses to start as root.
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--no-first-run", f"--user-data-dir={os.environ.get('TMPDIR', '/tmp')}"
                           f"/ih-chromium-{os.getpid()}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_page_in_a_browser_opens_the_run_a_cell_points_at(matrix_run: Path) -> None:
    page = matrix_run / "report.html"
    dom = _browser("--dump-dom", f"{page.as_uri()}#run-0")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<details id="run-0" class="run" open="">' in dom.stdout  # the script ran
    assert '<details id="run-1" class="run">' in dom.stdout
    assert 'id="verdict">all passed<' in dom.stdout
    shot = matrix_run / "report.png"
    proc = _browser(f"--screenshot={shot}", "--window-size=1280,900", page.as_uri())
    assert proc.returncode == 0 and shot.stat().st_size > 10_000


@pytest.mark.parametrize(("args", "needle"), [
    (["--shard", "3/2"], "--shard '3/2' is not I/N"),
    (["--kernel", "debian:5.4"], "debian:5.4"),
    (["--scenario", "nowhere.toml"], "cannot read scenario nowhere.toml"),
    (["-j", "0"], "-j 0 is not a number of guests"),
    (["--fuzz-steps", "-3"], "--fuzz-steps -3 is negative"),
    (["--also-profile", "linux-9.9"], "linux-9.9"),
])
def test_bad_input_is_one_line_before_any_guest(tmp_path: Path, args: list[str],
                                                needle: str) -> None:
    started = time.monotonic()
    proc = harness("run", "--out", str(tmp_path), *args, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iommu-harness: error: ") and \
        needle in lines[0], proc.stderr
    # No QEMU of this run (other tests' guests may run beside it: the machine is not quiet).
    assert not qemu_using(tmp_path) and time.monotonic() - started < 60
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_a_tree_without_the_vfio_selftests_is_one_line(tmp_path: Path) -> None:
    # A tree older than the suite (6.18): one line before anything is built or booted.
    tree = tmp_path / "linux"
    for marker in ("arch", "scripts/kconfig", "tools/testing/selftests/iommu"):
        (tree / marker).mkdir(parents=True)
    for marker in ("Makefile", "Kconfig", "scripts/kconfig/merge_config.sh"):
        (tree / marker).write_text("")
    proc = harness("selftest", "--kernel", str(tree), "--suite", "vfio",
                   "--out", str(tmp_path / "out"), timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "has no tools/testing/selftests/vfio/Makefile" in lines[0]
    assert "6.18 or later" in lines[0]
    assert not (tmp_path / "out").exists()
