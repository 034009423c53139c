"""Report writers on a recorded results file: results.json round trip, JUnit XML against its
schema, the HTML page parsed, the terminal's matrix; merging shards' results."""

from __future__ import annotations

import dataclasses
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from lxml import etree

from harness.errors import ConfigError
from harness.reports import format_matrix, junit_xml, report_html, write_reports
from harness.results import (
    Outcome,
    RunResults,
    load_results,
    merge,
    ordered,
    results_json,
    worst,
)

DATA = Path(__file__).parent.parent / "data"
RECORDED = DATA / "results" / "recorded.json"


@pytest.fixture(scope="module")
def recorded() -> RunResults:
    return load_results(RECORDED)


def test_results_json_round_trips(recorded: RunResults) -> None:
    # What a run wrote loads back into the same objects and writes out the same document; the
    # branches it missed are derived from the model's registry as it is now (a branch added
    # since the recording is missed too), so only the branches taken must be the recorded ones.
    written, read = results_json(recorded), json.loads(RECORDED.read_text())
    assert {k: v for k, v in written.items() if k != "coverage"} == \
        {k: v for k, v in read.items() if k != "coverage"}
    assert [(c["profile"], c["taken"]) for c in written["coverage"]] == \
        [(c["profile"], c["taken"]) for c in read["coverage"]]


def test_the_recorded_runs_have_every_kind_of_outcome(recorded: RunResults) -> None:
    outcomes = {r.outcome for r in recorded.runs}
    assert outcomes == {Outcome.PASS, Outcome.SKIPPED, Outcome.DISAGREE, Outcome.DIED}
    assert not recorded.ok


def test_outcomes_order_from_best_to_worst() -> None:
    assert worst([]) is Outcome.PASS
    assert worst([Outcome.DISAGREE, Outcome.SPLAT, Outcome.FAIL]) is Outcome.SPLAT
    assert worst([Outcome.SKIPPED, Outcome.PASS]) is Outcome.PASS
    assert not Outcome.SKIPPED.failed and Outcome.DIED.failed


def test_a_file_that_is_not_results_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"schema": 99}')
    with pytest.raises(ConfigError, match="not an iommu-harness results file of schema 1"):
        load_results(tmp_path)
    with pytest.raises(ConfigError, match="cannot read results"):
        load_results(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------- JUnit

def test_junit_is_valid_against_the_schema(recorded: RunResults) -> None:
    schema = etree.XMLSchema(etree.parse(str(DATA / "junit.xsd")))
    doc = etree.fromstring(junit_xml(recorded).encode())
    schema.assertValid(doc)


def test_junit_counts_and_failure_text(recorded: RunResults) -> None:
    root = etree.fromstring(junit_xml(recorded).encode())
    assert root.get("tests") == str(len(recorded.runs))
    assert root.get("failures") == "2" and root.get("skipped") == "4"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [
        "x86_64-vtd debian:6.1", "x86_64-vtd debian:6.12", "x86_64-vtd debian:7.2",
        "aarch64-smmuv3 debian:6.1", "aarch64-smmuv3 debian:6.12"]
    fail = root.find(".//testcase[@name='tegra-like shared domain over one shared group']")
    assert fail is not None
    failure = fail.find("failure")
    assert failure is not None and failure.get("type") == "disagree"
    assert (failure.get("message") or "").startswith("disagree: step 2 attach_dev t edu2: ")
    text = failure.text or ""
    assert "attach_dev t edu2" in text and "--- kernel log ---" in text
    died = root.find(".//testcase[@classname='iommu-harness.x86_64-vtd.debian-7_2']/failure")
    assert died is not None and died.get("type") == "died"
    assert "panic:sysrq triggered crash" in (died.get("message") or "")
    out = fail.find("system-out")
    assert out is not None and "[[ATTACHMENT|" in (out.text or "")
    props = {p.get("name"): p.get("value") for p in suites[0].iter("property")}
    assert props["kernel.release"] == "6.1.0-57-amd64" and props["kernel.spec"] == "debian:6.1"


# ---------------------------------------------------------------------------------- HTML

class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.cells: list[str] = []
        self.external: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"] or "")
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if tag in ("link", "img", "script") and (a.get("href") or a.get("src")):
            self.external.append(a.get("href") or a.get("src") or "")
        self._in_cell = (tag == "a" and self._in_cell) or (tag == "td" and "cell" in
                                                          (a.get("class") or ""))

    def handle_data(self, data: str) -> None:
        if self._in_cell and data.strip():
            self.cells.append(data.strip())
            self._in_cell = False


def test_the_page_links_every_cell_to_its_run(recorded: RunResults, tmp_path: Path) -> None:
    page = _Page()
    page.feed(report_html(recorded, tmp_path))
    assert {"matrix", "verdict"} <= page.ids
    runs = {f"run-{i}" for i in range(len(recorded.runs))}
    assert runs <= page.ids
    assert {h[1:] for h in page.links if h.startswith("#")} == runs
    assert sorted(page.cells) == sorted(
        {"pass": "pass", "skipped": "-", "disagree": "DIFF", "died": "DIED"}[r.outcome.value]
        for r in recorded.runs)
    assert page.external == []  # self-contained


def test_the_page_escapes_what_the_kernel_printed(recorded: RunResults, tmp_path: Path) -> None:
    run = dataclasses.replace(recorded.runs[0], kernel_log="<script>alert(1)</script>")
    text = report_html(RunResults((run,)), tmp_path)
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)" in text


# ------------------------------------------------------------------------- text and merge

def test_the_matrix_table(recorded: RunResults) -> None:
    table = format_matrix(recorded.runs).splitlines()
    assert table[0].split() == ["scenario", "x86_64", "6.1", "x86_64", "6.12", "x86_64", "7.2",
                                "aarch64", "6.1", "aarch64", "6.12"]
    tegra = next(line for line in table if line.startswith("tegra-like"))
    assert tegra.split()[-1] == "DIFF"
    assert table[-1] == "14 scenario runs: 4 skipped, 8 pass, 1 disagree, 1 died"


def test_merging_shards_gives_the_whole_run(recorded: RunResults, tmp_path: Path) -> None:
    odd = RunResults(recorded.runs[1::2], "2026-12-03T10:00:00", "2026-12-03T10:05:00",
                     recorded.host, ("2/2",))
    even = RunResults(recorded.runs[::2], "2026-12-03T09:59:00", "2026-12-03T10:04:00",
                      recorded.host, ("1/2",))
    whole = merge([odd, even])
    assert whole.runs == ordered(recorded.runs)
    assert (whole.started, whole.finished) == ("2026-12-03T09:59:00", "2026-12-03T10:05:00")
    assert whole.shards == ("2/2", "1/2")
    with pytest.raises(ConfigError, match="is in two of the merged results"):
        merge([odd, odd])


def test_write_reports_writes_the_three_files(recorded: RunResults, tmp_path: Path) -> None:
    page = write_reports(recorded, tmp_path / "out")
    assert page == tmp_path / "out" / "report.html"
    assert sorted(p.name for p in page.parent.iterdir()) == \
        ["junit.xml", "report.html", "results.json"]
    assert load_results(page.parent) == recorded
