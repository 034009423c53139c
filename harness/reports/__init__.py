"""Report writers: text for the terminal, results.json, junit.xml and report.html for CI
systems and people. Each reads only typed results (:mod:`harness.results`)."""

from __future__ import annotations

from pathlib import Path

from ..results import RESULTS_FILE, RunResults, write_results
from .html import report_html
from .junit import junit_xml
from .text import format_matrix, format_scenario

JUNIT_FILE = "junit.xml"
HTML_FILE = "report.html"


def write_reports(results: RunResults, out: Path) -> Path:
    """results.json, junit.xml and report.html in ``out``; returns the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    write_results(results, out / RESULTS_FILE)
    (out / JUNIT_FILE).write_text(junit_xml(results))
    page = out / HTML_FILE
    page.write_text(report_html(results, out))
    return page


__all__ = ["HTML_FILE", "JUNIT_FILE", "format_matrix", "format_scenario", "junit_xml",
           "report_html", "write_reports"]
