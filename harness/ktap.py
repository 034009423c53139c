"""The kernel's selftests inside a guest, read back (pure): their KTAP output as one result
per test, and the kernel log cut into each test's part.

kselftest_harness.h prints ``#  RUN           FIXTURE.VARIANT.TEST ...`` before a test and
``ok N FIXTURE.VARIANT.TEST`` (``not ok``; ``# SKIP reason`` after the name) after it
(Documentation/dev-tools/ktap.rst). The guest writes a marker line into the kernel log
(``/dev/kmsg``) at every RUN line, so each record between two markers belongs to one test: a
test that passes but makes the kernel WARN fails.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from .dmesg import Event, Record, classify

Status = Literal["pass", "fail", "skip"]
MARKER = "ih-selftest-run: "  # what the guest writes to /dev/kmsg before each test
_RESULT = re.compile(r"^(not ok|ok) (\d+) (\S+)(?:\s+#\s*(\w+)\s*(.*))?$")
_RUN = re.compile(r"^#\s+RUN\s+(\S+)")


@dataclass(frozen=True)
class TestResult:
    name: str
    status: Status
    reason: str = ""  # the SKIP or the failure's reason, as the test printed it
    output: tuple[str, ...] = ()  # the test's own lines, from its RUN line to its result


def parse_ktap(text: str) -> list[TestResult]:
    """One result per ``ok``/``not ok`` line at the top level (subtests' indented lines and
    the plan are not results); each with the lines since its RUN line."""
    results: list[TestResult] = []
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if _RUN.match(line):
            lines = []
        lines.append(line)
        m = _RESULT.match(line)
        if not m:
            continue
        verdict, _, name, directive, reason = m.groups()
        if directive and directive.upper() == "SKIP":
            status: Status = "skip"
        else:
            status = "pass" if verdict == "ok" else "fail"
        results.append(TestResult(name, status, (reason or "").strip(), tuple(lines)))
        lines = []
    return results


EXIT = "ih-selftest-exit: "  # the line the wrapper ends the output with: the program's status
_EXIT = re.compile(rf"^{EXIT}(\d+)$", re.MULTILINE)


def run_wrapper(command: str) -> str:
    """The guest command that runs a selftest, marks each test in the kernel log, and ends
    the output with the program's exit status."""
    return (f"{{ {command}; echo \"{EXIT}$?\"; }} 2>&1 | while IFS= read -r l; do "
            f"case \"$l\" in *'  RUN  '*) echo \"{MARKER}${{l##*RUN}}\" > /dev/kmsg;; esac; "
            f"printf '%s\\n' \"$l\"; done")


def exit_status(output: str) -> int | None:
    """The program's exit status from the wrapper's output; None where it never got there (the
    guest stopped answering, or the output was cut)."""
    found = _EXIT.findall(output)
    return int(found[-1]) if found else None


def records_by_test(records: Sequence[Record]) -> dict[str, list[Record]]:
    """The kernel log cut at the markers: test name → the records logged while it ran."""
    out: dict[str, list[Record]] = {}
    current: list[Record] | None = None
    for rec in records:
        if rec.text.startswith(MARKER):
            name = rec.text[len(MARKER):].split()[0] if rec.text[len(MARKER):].split() else ""
            current = out.setdefault(name, [])
            continue
        if current is not None:
            current.append(rec)
    return out


def splats(records: Iterable[Record]) -> list[Event]:
    """The events of a test's records that fail it whatever its own verdict."""
    return [e for e in classify(records) if e.is_splat]
