"""JUnit XML (``junit.xml``): one testsuite per (platform, kernel), one testcase per scenario.

The dialect is the one Jenkins, GitLab and GitHub's test-report actions read: failures carry a
message and a text body (here the step table and the kernel log slice), a skipped case a
message, and ``[[ATTACHMENT|path]]`` in a case's system-out attaches a file (the guest's
console log).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

from ..results import Outcome, RunResults, ScenarioResult
from .text import columns, step_table, title


def failure_text(r: ScenarioResult) -> str:
    """Why a run failed, for people: the step table, each problem, the kernel log slice."""
    parts = [title(r)]
    if r.outcome is Outcome.DIED:
        parts.append(f"the guest died: {r.detail}")
    else:
        parts.append(step_table(r))
        parts += [f"step {s.index} {s.label}: {p.kind}: {p.text}"
                  for s in r.steps for p in s.problems]
        if r.detail:
            parts += ["--- reproducer ---", r.detail]
    if r.kernel_log:
        parts += ["--- kernel log ---", r.kernel_log]
    return "\n".join(parts)


def _message(r: ScenarioResult) -> str:
    if r.outcome is Outcome.DIED:
        return f"the guest died: {r.detail}"
    first = next((s for s in r.steps if s.problems), None)
    if first is None:
        return r.outcome.value
    return (f"{r.outcome.value}: step {first.index} {first.label}: "
            f"{'; '.join(p.text for p in first.problems)}")[:500]


def _case(parent: ET.Element, r: ScenarioResult) -> None:
    platform, kernel = r.cell
    case = ET.SubElement(parent, "testcase", {
        "classname": f"iommu-harness.{platform}.{kernel.replace(':', '-').replace('.', '_')}",
        "name": r.scenario, "file": r.file, "time": f"{r.duration:.3f}"})
    if r.outcome is Outcome.SKIPPED:
        ET.SubElement(case, "skipped", {"message": r.detail})
    elif r.outcome.failed:
        fail = ET.SubElement(case, "failure", {"message": _message(r), "type": r.outcome.value})
        fail.text = failure_text(r)
    out = [step_table(r)] if r.steps else []
    if r.console_log:
        out.append(f"[[ATTACHMENT|{r.console_log}]]")
    if out:
        ET.SubElement(case, "system-out").text = "\n".join(out)


def _counts(runs: Sequence[ScenarioResult]) -> Mapping[str, str]:
    return {"tests": str(len(runs)),
            "failures": str(sum(r.outcome.failed for r in runs)), "errors": "0",
            "skipped": str(sum(r.outcome is Outcome.SKIPPED for r in runs)),
            "time": f"{sum(r.duration for r in runs):.3f}"}


def junit_xml(results: RunResults) -> str:
    root = ET.Element("testsuites", {"name": "iommu-harness", **_counts(results.runs)})
    for platform, kernel in columns(results.runs):
        runs = [r for r in results.runs if r.cell == (platform, kernel)]
        suite = ET.SubElement(root, "testsuite", {
            "name": f"{platform} {kernel}", **_counts(runs),
            "timestamp": results.started[:19], "hostname": results.host.get("node", "")})
        props = ET.SubElement(suite, "properties")
        first = runs[0]
        for name, value in (("platform", platform), ("kernel.spec", kernel),
                            ("kernel.release", first.release),
                            ("kernel.package", str(first.kernel_resolved.get("package_version")
                                                   or "")),
                            ("model.profile", first.profile)):
            ET.SubElement(props, "property", {"name": name, "value": value})
        for r in runs:
            _case(suite, r)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"
