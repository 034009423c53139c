"""One self-contained HTML page (``report.html``): the matrix, each cell opening its scenario
run (steps, kernel and model answers, problems, the kernel log slice). No external assets."""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

from ..coverage import coverage
from ..results import Outcome, RunResults, ScenarioResult, StepResult
from ..steps import errno_text
from .text import CELL, columns, rows, summary

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin:0}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
td.cell a{display:block;text-decoration:none;color:inherit;font-weight:600}
.o-pass{background:#d9f2d9}.o-skipped{background:#f3f3f3;color:#888}
.o-disagree{background:#ffe8b3}.o-fail{background:#ffc9c9}
.o-splat{background:#f59d9d}.o-died{background:#c0392b;color:#fff}
details{border:1px solid #ccc;margin:.4em 0;padding:.3em .6em}
details[open]{background:#fcfcfc}
summary{cursor:pointer}pre{background:#f6f6f6;padding:.5em;overflow:auto;max-height:30em}
.bad{color:#b00}.meta{color:#555}
"""

# Opening the run a cell (or a link) points at: a click, or a page opened at #run-N.
_SCRIPT = """
function openTarget(){var id=location.hash.slice(1);var d=id&&document.getElementById(id);
if(d&&d.tagName==='DETAILS'){d.open=true;d.scrollIntoView();}}
window.addEventListener('hashchange',openTarget);openTarget();
"""


def _link(path: str, base: Path) -> str:
    if not path:
        return ""
    try:
        rel = os.path.relpath(path, base)
    except ValueError:
        rel = path
    return f'<a href="{escape(rel)}">{escape(Path(path).name)}</a>'


def _answer(rc: int | None, guard: bool) -> str:
    return errno_text(rc) + (" (guard)" if guard else "")


def _step_row(s: StepResult) -> str:
    k, m = s.kernel, s.model
    model = _answer(m.rc, m.guard) + (f"; WARN in {s.model_warn}" if s.model_warn else "") \
        + ("; DMA fault" if s.model_fault else "")
    states = ", ".join(f"{d}={v}" for d, v in k.states.items())
    problems = "<br>".join(f'<span class="bad">{escape(p.kind)}: {escape(p.text)}</span>'
                           for p in s.problems) or "ok"
    also = "".join(f"<td>{escape(errno_text(rc))}</td>" for rc in s.also)
    return (f'<tr class="o-{s.outcome.value}"><td>{s.index}</td><td>{escape(s.label)}</td>'
            f"<td>{escape(_answer(k.rc, k.guard))}</td><td>{escape(model)}</td>{also}"
            f"<td>{escape(states)}</td><td>{escape(', '.join(s.events))}</td>"
            f"<td>{problems}</td></tr>")


def _run(i: int, r: ScenarioResult, base: Path) -> str:
    meta = (f"{escape(r.platform)}, {escape(r.kernel)} = {escape(r.release)}"
            f" ({escape(str(r.kernel_resolved.get('package_version') or 'not a package'))}), "
            f"model {escape(r.profile)}{' (assumed)' if r.profile_assumed else ''}, "
            f"{r.duration:.1f} s; console log: {_link(r.console_log, base) or '-'}")
    body = [f'<p class="meta">{meta}</p>']
    if r.detail:
        tag = "pre" if "\n" in r.detail else "p"  # a fuzz reproducer is a scenario file
        body.append(f'<{tag} class="bad">{escape(r.detail)}</{tag}>')
    if r.steps:
        also = "".join(f"<th>{escape(p)}</th>" for p in r.also_profiles)
        body.append("<table><tr><th>#</th><th>step</th><th>kernel</th><th>model</th>"
                    f"{also}<th>domains (kernel)</th><th>events</th><th>verdict</th></tr>"
                    + "".join(_step_row(s) for s in r.steps) + "</table>")
    if r.kernel_log:
        body.append(f"<details><summary>kernel log</summary><pre>{escape(r.kernel_log)}"
                    "</pre></details>")
    return (f'<details id="run-{i}" class="run"><summary><h2 style="display:inline">'
            f'<span class="o-{r.outcome.value}">{CELL[r.outcome]}</span> {escape(r.scenario)}'
            f" &middot; {escape(r.platform)} &middot; {escape(r.kernel)}</h2></summary>"
            + "".join(body) + "</details>")


def _coverage(runs: tuple[ScenarioResult, ...]) -> str:
    """Per profile: how many of its kernel branches the steps took, and the others."""
    rows = []
    for c in coverage(runs):
        missed = "".join(f"<li><code>{escape(b.id)}</code>: {escape(b.what)} "
                         f'<span class="meta">({escape(b.source)})</span></li>' for b in c.missed)
        head = (f"{escape(c.profile)} ({escape(', '.join(c.platforms))}): "
                f"{len(c.taken)}/{c.total} kernel branches taken")
        rows.append(f"<details><summary>{head}; {len(c.missed)} never</summary><ul>{missed}"
                    "</ul></details>" if missed else f"<p>{head}</p>")
    return f'<h2 id="coverage">Rule coverage</h2>{"".join(rows)}' if rows else ""


def report_html(results: RunResults, base: Path) -> str:
    """The page; links to console logs are relative to ``base``, the page's folder."""
    runs = results.runs
    index = {(r.scenario, r.cell): i for i, r in enumerate(runs)}
    cols = columns(runs)
    releases = {r.cell: r.release for r in runs}
    head = "".join(f"<th>{escape(p)}<br>{escape(k)}<br><small>{escape(releases[(p, k)])}"
                   "</small></th>" for p, k in cols)
    body = []
    for name in rows(runs):
        cells = []
        for c in cols:
            i = index.get((name, c))
            if i is None:
                cells.append("<td></td>")
                continue
            o = runs[i].outcome
            cells.append(f'<td class="cell o-{o.value}"><a href="#run-{i}" '
                         f'title="{escape(runs[i].detail or o.value)}">{CELL[o]}</a></td>')
        body.append(f"<tr><th>{escape(name)}</th>{''.join(cells)}</tr>")
    verdict = "all passed" if results.ok else "FAILED"
    host = ", ".join(f"{k} {v}" for k, v in results.host.items() if v)
    legend = ", ".join(f'<span class="o-{o.value}">{CELL[o]}</span> {o.value}' for o in Outcome)
    failed = ", ".join(f'<a href="#run-{i}">{escape(r.scenario)} ({escape(r.platform)}, '
                       f"{escape(r.kernel)})</a>" for i, r in enumerate(runs) if r.outcome.failed)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>iommu-harness: {verdict}</title><style>{_STYLE}</style></head><body>"
        f'<h1>iommu-harness run: <span class="{"" if results.ok else "bad"}" id="verdict">'
        f"{verdict}</span></h1>"
        f'<p class="meta">{escape(summary(runs))}. Started {escape(results.started)}, '
        f"finished {escape(results.finished)}; {escape(host)}"
        f"{'; shards ' + escape(', '.join(results.shards)) if results.shards else ''}</p>"
        f'<table id="matrix"><tr><th>scenario</th>{head}</tr>{"".join(body)}</table>'
        f'<p class="meta">{legend}</p>'
        + (f"<p>Failed: {failed}</p>" if failed else "")
        + _coverage(runs)
        + "".join(_run(i, r, base) for i, r in enumerate(runs))
        + f"<script>{_SCRIPT}</script></body></html>\n")
