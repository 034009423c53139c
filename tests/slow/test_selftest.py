"""The kernel's own iommufd selftest (``iommu-harness selftest``) on a tree built by the
harness with the iommufd-test fragment: Debian's linux-source-7.2, x86_64."""

from __future__ import annotations

import json
from pathlib import Path

from lxml import etree

from tests.slow import linux_repo as lr
from tests.slow.test_source_tree import cli

PACKAGE = "linux-source-7.2"


def test_the_iommufd_selftest_runs_in_a_guest(tmp_path: Path) -> None:
    tree = lr.plain_tree(PACKAGE)
    out = tmp_path / "selftest"
    proc = cli("selftest", "--kernel", str(tree), "--out", str(out), cwd=tmp_path)
    runs = json.loads((out / "results.json").read_text())["runs"]
    names = [r["scenario"] for r in runs]
    assert len(runs) > 200 and all(n.startswith("iommufd: ") for n in names)
    assert "iommufd: iommufd.simple_close" in names
    outcomes = {r["outcome"] for r in runs}
    assert outcomes <= {"pass", "skipped"}, [
        (r["scenario"], r["detail"]) for r in runs if r["outcome"] not in ("pass", "skipped")]
    assert proc.returncode == 0, proc.stderr
    # a result per test in the JUnit file too, and the guest's kernel log cut per test
    cases = etree.parse(str(out / "junit.xml")).findall(".//testcase")
    assert len(cases) == len(runs)
    assert any("iommufd_mock" in r["kernel_log"] for r in runs)


# VFIO's scenarios, group/container and iommufd, on the same build (IOMMUFD and VFIO's cdev
# are in the base fragment): the iommufd ones run only on a source-built kernel.
USER_SPACE = sorted(Path(__file__).parent.parent.glob("scenarios/iommufd-*.toml")) + \
    sorted(Path(__file__).parent.parent.glob("scenarios/vfio-*.toml"))


def test_vfio_and_iommufd_scenarios_and_fuzzing_on_a_source_built_kernel(tmp_path: Path) -> None:
    tree = lr.plain_tree(PACKAGE)
    out = tmp_path / "run"
    proc = cli("run", "--platform", "x86_64-vtd", "--kernel", str(tree), "--kconfig",
               "iommufd-test", "--scenario", *map(str, USER_SPACE), "--fuzz-steps", "60",
               "--out", str(out), cwd=tmp_path)
    runs = json.loads((out / "results.json").read_text())["runs"]
    by_file = {Path(r["file"]).stem: r for r in runs}
    for name in ("iommufd-dma-replace", "iommufd-shared-group"):
        assert by_file[name]["outcome"] == "pass", by_file[name]["detail"]
    # the 6.1 scenario is not for this kernel's profile; every other one passes
    assert by_file["iommufd-absent-6.1"]["outcome"] == "skipped"
    assert all(r["outcome"] in ("pass", "skipped") for r in runs), [
        (r["scenario"], r["outcome"], r["detail"][-2000:]) for r in runs
        if r["outcome"] not in ("pass", "skipped")]
    fuzz = next(r for r in runs if r["file"].startswith("fuzz:"))
    assert any(s["label"].startswith("iommufd_") for s in fuzz["steps"])  # drawn here
    assert proc.returncode == 0, proc.stderr
