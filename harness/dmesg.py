"""Kernel log records → classified events (pure, streaming).

Input is either /dev/kmsg records (``prio,seq,usec,flags;text``, Documentation/ABI/testing/
dev-kmsg) or console text (``[    1.234567] text``), as a guest or a console log gives them.
Output is a list of :class:`Event`: one per report, a multi-line report (a WARNING with its
call trace, a KASAN report) being one event. Every event has a stable ``signature`` (its kind
and the function or device it names, never an address or a timestamp), so two runs can be
compared and a bisection can tell "the same failure" from another one.

The parser never raises on odd input: truncated reports end at the end of the log, lines it
does not know are ignored, and a report cut by a dying kernel still yields its event.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# Event kinds that mean the kernel is in trouble (a test fails on any it did not declare).
SPLAT_KINDS = frozenset({
    "panic", "oops", "bug", "warning", "kasan", "kfence", "ubsan", "lockdep", "rcu_stall",
    "soft_lockup", "hard_lockup", "hung_task", "refcount", "list_corruption",
})


# Reports after which the kernel does not go on (with the harness's oops=panic).
FATAL_KINDS = frozenset({"panic", "oops", "bug", "list_corruption", "kasan", "kfence"})


@dataclass(frozen=True)
class Record:
    """One kernel log line: /dev/kmsg sequence number and timestamp when known."""

    text: str
    seq: int | None = None
    usec: int | None = None
    level: int | None = None


@dataclass(frozen=True)
class Event:
    kind: str
    signature: str
    summary: str
    lines: tuple[str, ...]
    first_seq: int | None = None
    last_seq: int | None = None
    details: tuple[tuple[str, str], ...] = field(default=())
    usec: int | None = None  # timestamp of the first line

    @property
    def is_splat(self) -> bool:
        return self.kind in SPLAT_KINDS

    def detail(self, key: str) -> str | None:
        return dict(self.details).get(key)


# ---------------------------------------------------------------------------------- records

_KMSG = re.compile(r"^(\d+),(\d+),(\d+),[^;]*;(.*)$")
_CONSOLE = re.compile(r"^(?:<(\d)>)?\[\s*(\d+)\.(\d{1,9})\]\s?(.*)$")


def parse_records(text: str) -> Iterator[Record]:
    """Records from /dev/kmsg output or from console text (either, line by line)."""
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if re.match(r"^ [A-Z_]+=", line):
            continue  # /dev/kmsg dictionary continuation (" SUBSYSTEM=pci"): not a message
        m = _KMSG.match(line)
        if m:
            prio, seq, usec, msg = m.groups()
            yield Record(_unescape_kmsg(msg), int(seq), int(usec), int(prio) & 7)
            continue
        m = _CONSOLE.match(line)
        if m:
            level, sec, frac, msg = m.groups()
            yield Record(msg, None, int(sec) * 1_000_000 + int(frac.ljust(6, "0")[:6]),
                         int(level) if level else None)
            continue
        if line.strip():
            yield Record(line)


def _unescape_kmsg(msg: str) -> str:
    """/dev/kmsg escapes non-printable bytes as \\xNN."""
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), msg)


# ---------------------------------------------------------------------------------- patterns

_ADDR = re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{8,16}\b")
_FUNC = r"([A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+"

# One-line starts of multi-line reports: (kind, pattern). Order matters: first match wins.
_REPORT_STARTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("kasan", re.compile(r"BUG: KASAN: ([\w-]+) in " + r"([A-Za-z_.$][\w.$]*)")),
    ("kfence", re.compile(r"BUG: KFENCE: ([\w-]+(?: [\w-]+)*) in ([A-Za-z_.$][\w.$]*)")),
    ("ubsan", re.compile(r"UBSAN: ([\w-]+) in (\S+?):(\d+)")),
    ("lockdep", re.compile(r"WARNING: (possible circular locking dependency detected|possible "
                           r"recursive locking detected|suspicious RCU usage|inconsistent lock "
                           r"state|possible irq lock inversion dependency detected|bad unlock "
                           r"balance detected!|lock held when returning to user space!)")),
    ("lockdep", re.compile(r"BUG: (sleeping function called from invalid context|scheduling "
                           r"while atomic|workqueue lockup)")),
    ("soft_lockup", re.compile(r"watchdog: BUG: soft lockup - CPU#(\d+) stuck for \d+s! "
                               r"\[([^:\]]+)")),
    ("hard_lockup", re.compile(r"(?:Watchdog detected hard LOCKUP on cpu|NMI watchdog: Watchdog "
                               r"detected hard LOCKUP on cpu) (\d+)")),
    ("rcu_stall", re.compile(r"rcu: INFO: (\w+) (?:self-)?detected stalls? on CPUs?")),
    ("hung_task", re.compile(r"INFO: task ([^:]+):\d+ blocked for more than \d+ seconds")),
    ("refcount", re.compile(r"refcount_t: ([\w -]+?)[;.]")),
    ("list_corruption", re.compile(r"(list_(?:add|del)) corruption")),
    # 7.x: "WARNING: file:line at func+0x../0x.. [module], CPU#0: comm/pid"
    ("warning", re.compile(r"WARNING: (\S+?):(\d+) at " + _FUNC + r"(?: \[[\w]+\])?, CPU#")),
    ("warning", re.compile(r"WARNING: (\S+) at \S+, CPU#\d+")),
    # 6.x: "WARNING: CPU: 0 PID: 1 at file:line func+0x../0x.. [module]"
    ("warning", re.compile(r"WARNING: CPU: \d+ PID: \d+ at (\S+?):?(\d+)? " + _FUNC)),
    ("warning", re.compile(r"WARNING: CPU: \d+ PID: \d+ at (\S+) ")),
    ("bug", re.compile(r"kernel BUG at (\S+?):(\d+)!")),
    ("oops", re.compile(r"BUG: (kernel NULL pointer dereference|unable to handle page fault|"
                        r"unable to handle kernel paging request|Unable to handle kernel [\w ]+)"
                        )),
    ("oops", re.compile(r"Unable to handle kernel ([\w ]+) at virtual address")),
    ("oops", re.compile(r"(general protection fault|stack segment|invalid opcode)[:,]")),
    ("oops", re.compile(r"^Internal error: (.+?): ")),
    ("panic", re.compile(r"Kernel panic - not syncing: (.*)")),
)

# Lines that end a multi-line report.
_REPORT_END = re.compile(r"---\[ end (?:trace|Kernel panic)|^={20,}$")
# Lines that belong to a report without starting one.
_REPORT_BODY = re.compile(
    r"^(?:[A-Z][A-Z0-9]{1,4}:\s|Modules linked in|CPU: \d+|Hardware name|RIP:|R\d+:|FS:|CS:|"
    r"DR\d:|Call Trace:|Call trace:|<TASK>|</TASK>|<IRQ>|</IRQ>|pc :|lr :|sp :|x\d+ ?:|pstate:|"
    r"Code:|Tainted:|Workqueue:|Mem abort info:|Data abort info:|ESR =|EC =|SET =|FSC =|"
    r"EA =|ISV =|#PF:|PGD |Oops:|-+\[ cut here \]|\"echo 0 > /proc/sys/kernel/hung_task|"
    r"task:\S+\s+state:|NMI backtrace|Sending NMI|"
    r"CM =|WnR =|user pgtable|\[[0-9a-f]+\] pgd=|Internal error|Kernel Offset|PHYS_OFFSET|"
    r"Memory Limit|irq event stamp|hardirqs |softirqs |\? |---\[|Read of size|Write of size|"
    r"The buggy address|Allocated by|Freed by|Memory state|page:|flags:|raw:|page dumped|"
    r"addr |Stack:|Backtrace:|Disabling lock debugging|other info|Possible unsafe|"
    r"\s|\*|#\d|\d+ locks? held|stack backtrace|Chain exists|the existing dependency|"
    r"-> #\d|which lock|but task|and the lock|       CPU\d|       ----|  lock\(|  \*\*\* )")
_TRACE_FRAME = re.compile(r"^\s*(\? )?" + _FUNC)
_ARM_PC = re.compile(r"^pc : " + _FUNC)
_X86_RIP = re.compile(r"^RIP: [0-9a-f]+:" + _FUNC)

# One-line events.
# "probe of X failed" (6.1, drivers/base/dd.c: call_driver_probe), "probe with driver D
# failed" (6.12).
_PROBE_FAILED = re.compile(
    r"^(\S+) (\S+): probe (?:of \S+ |with driver \S+ )?failed with error (-\d+)")
_GROUP_ADD = re.compile(r"^(\S+) (\S+): Adding to iommu group (\d+)")
_DMAR_FAULT = re.compile(
    r"DMAR: \[(DMA \w+|INTR-REMAP)(?: NO_PASID| PASID \w+)?\] Request device \[([0-9a-f:.]+)\]"
    r"(?: PASID \w+)? fault (?:addr|index) (?:0x)?([0-9a-f]+)(?: \[fault reason (?:0x)?([0-9a-f]+)"
    r"\] ?(.*))?")
_SMMU_EVENT = re.compile(r"arm-smmu-v3 (\S+): event (0x[0-9a-f]+) received:")
_SMMU_WORD = re.compile(r"arm-smmu-v3 \S+:\s+(0x[0-9a-f]{16})$")
_IOMMU_ERROR = re.compile(
    r"(?i)\b(?:iommu|dmar|smmu|vfio)\b.*\b(?:fail(?:ed|ure)?|error|refus\w*|cannot|can't|"
    r"unable|busy|denied|not (?:supported|allowed))\b")


# A report that starts with a one-line cause continues into the WARNING, BUG or oops the
# kernel raises for it: (open kind, next start kind) pairs that are one event.
_CONTINUES = frozenset({
    ("refcount", "warning"), ("refcount", "bug"), ("list_corruption", "warning"),
    ("list_corruption", "bug"), ("list_corruption", "oops"), ("bug", "oops"), ("oops", "oops"),
    ("kasan", "oops"), ("kfence", "oops"),
})
# Reports a kernel repeats while the condition lasts: consecutive ones are one event, counted.
_REPEATING = frozenset({"hung_task", "soft_lockup", "rcu_stall", "hard_lockup"})
# Frames that are the reporting machinery, not the culprit.
_MACHINERY = re.compile(r"^(?:__warn|warn_|report_bug|handle_bug|exc_invalid_op|asm_exc_|"
                        r"refcount_warn_saturate|__list_(?:add|del)_valid|__list_valid|"
                        r"die|__die|do_trap|do_error_trap|bug_handler|brk_handler|"
                        r"call_break_hook|el1_|do_el1_|__do_kernel_fault|do_page_fault|"
                        r"do_translation_fault|do_mem_abort|page_fault_oops|"
                        r"kernelmode_fixup_or_oops|__bad_area_nosemaphore|do_user_addr_fault|"
                        r"exc_page_fault)")


def _culprit(frames: list[str]) -> str:
    return next((f for f in frames if not _MACHINERY.match(f)), "")


def _signature(kind: str, *parts: str) -> str:
    clean = [_ADDR.sub("ADDR", p.strip()) for p in parts if p and p.strip()]
    return ":".join([kind, *clean])


# ---------------------------------------------------------------------------------- classifier

@dataclass
class _Open:
    kind: str
    summary: str
    sig_parts: list[str]
    lines: list[str]
    first_seq: int | None
    last_seq: int | None
    details: dict[str, str]
    usec: int | None = None
    frames: list[str] = field(default_factory=list)


def classify(records: Iterable[Record]) -> list[Event]:
    """Fold records into events, in log order."""
    events: list[Event] = []
    current: _Open | None = None
    smmu: _Open | None = None  # an SMMUv3 event collecting its four words

    def close(report: _Open | None) -> None:
        if report is None:
            return
        parts = report.sig_parts
        if report.kind == "warning":
            parts = parts[:1]
        elif report.kind in ("oops", "bug", "refcount", "list_corruption") and report.frames:
            parts = [*parts[:1], _culprit(report.frames)]
        sig = _signature(report.kind, *parts)
        prev = events[-1] if events else None
        if report.kind in _REPEATING and prev is not None and prev.signature == sig:
            details = dict(prev.details)
            details["count"] = str(int(details.get("count", "1")) + 1)
            events[-1] = Event(prev.kind, sig, prev.summary, prev.lines + tuple(report.lines),
                               prev.first_seq, report.last_seq, tuple(sorted(details.items())),
                               prev.usec)
            return
        events.append(Event(report.kind, sig, report.summary,
                            tuple(report.lines), report.first_seq, report.last_seq,
                            tuple(sorted(report.details.items())), report.usec))

    for rec in records:
        text = rec.text
        if smmu is not None:
            word = _SMMU_WORD.search(text)
            if word and len(smmu.lines) < 5:
                smmu.lines.append(text)
                smmu.last_seq = rec.seq
                _smmu_word(smmu, len(smmu.lines) - 2, int(word.group(1), 16))
                if len(smmu.lines) == 5:
                    _fold_smmu(events, smmu)
                    smmu = None
                continue
            _fold_smmu(events, smmu)
            smmu = None

        start = _report_start(text)
        if start is not None and current is not None and (current.kind, start[0]) in _CONTINUES:
            current.lines.append(text)
            current.last_seq = rec.seq
            if start[0] == "warning" and len(start[1]) > 1:
                current.details.setdefault("location", start[1][1])
            continue
        if start is not None:
            kind, parts = start
            # A panic or oops inside an open WARNING/oops report closes it and starts anew,
            # except the panic that an oops causes, which joins a fresh event of its own.
            close(current)
            current = _Open(kind, text.strip(), parts, [text], rec.seq, rec.seq, {}, rec.usec)
            if kind == "warning":
                current.details["location"] = parts[1] if len(parts) > 1 else ""
            if _REPORT_END.search(text):
                close(current)
                current = None
            continue
        if current is not None:
            if _REPORT_END.search(text):
                current.lines.append(text)
                current.last_seq = rec.seq
                close(current)
                current = None
                continue
            if _REPORT_BODY.match(text) or _TRACE_FRAME.match(text):
                current.lines.append(text)
                current.last_seq = rec.seq
                _note_frame(current, text)
                continue
            close(current)
            current = None

        one = _one_line_event(rec)
        if one is not None:
            events.append(one)
            continue
        m = _SMMU_EVENT.search(text)
        if m:
            smmu = _Open("smmu_event", text.strip(), [m.group(2)], [text], rec.seq, rec.seq,
                         {"smmu": m.group(1), "event_id": m.group(2), "count": "1"}, rec.usec)
    close(current)
    if smmu is not None:
        _fold_smmu(events, smmu)
    return events


def _note_frame(report: _Open, text: str) -> None:
    """Collect the functions of a report's trace, most recent first; frames marked '?' are
    guesses of the unwinder and left out."""
    pc = _X86_RIP.match(text) or _ARM_PC.match(text)
    if pc:
        report.frames.append(pc.group(1))
        return
    frame = _TRACE_FRAME.match(text)
    if frame and not frame.group(1):
        report.frames.append(frame.group(2))


def _report_start(text: str) -> tuple[str, list[str]] | None:
    for kind, pattern in _REPORT_STARTS:
        m = pattern.search(text)
        if m:
            groups = [g for g in m.groups() if g]
            if kind == "warning":
                # Signature: the function only. The file and line go to details; a line number
                # moves with every patch and a module's path with its build directory.
                where = groups[0].rsplit("/src/", 1)[-1] if groups[0].startswith("/") else \
                    groups[0]
                location = f"{where}:{groups[1]}" if len(groups) == 3 else where
                return kind, [groups[2] if len(groups) == 3 else "", location]
            if kind == "panic":
                return kind, [_ADDR.sub("ADDR", groups[0])[:80]] if groups else []
            return kind, groups
    return None


def _one_line_event(rec: Record) -> Event | None:
    text = rec.text
    m = _GROUP_ADD.search(text)
    if m:
        return Event("iommu_group_add", _signature("iommu_group_add", m.group(2)), text.strip(),
                     (text,), rec.seq, rec.seq,
                     (("device", m.group(2)), ("driver", m.group(1)), ("group", m.group(3))),
                     rec.usec)
    m = _PROBE_FAILED.search(text)
    if m:
        return Event("probe_failed", _signature("probe_failed", m.group(1), m.group(3)),
                     text.strip(), (text,), rec.seq, rec.seq,
                     (("device", m.group(2)), ("driver", m.group(1)), ("errno", m.group(3))),
                     rec.usec)
    m = _DMAR_FAULT.search(text)
    if m:
        request, source, addr, reason, why = m.groups()
        details = [("request", request), ("source", source), ("address", f"0x{addr}")]
        if reason:
            details += [("reason", f"0x{reason}"), ("reason_text", (why or "").strip())]
        return Event("dmar_fault", _signature("dmar_fault", source, request, reason or ""),
                     text.strip(), (text,), rec.seq, rec.seq, tuple(sorted(details)), rec.usec)
    if _IOMMU_ERROR.search(text) and "Adding to iommu group" not in text:
        return Event("iommu_error", _signature("iommu_error", re.sub(r"\d+", "N", text)[:120]),
                     text.strip(), (text,), rec.seq, rec.seq, (), rec.usec)
    return None


def _smmu_word(ev: _Open, index: int, value: int) -> None:
    """SMMUv3 event record words (arm-smmu-v3.c: arm_smmu_evtq_thread dumps EVTQ_ENT_DWORDS):
    word 0 holds the event id in bits 7:0 and the stream id in bits 63:32; word 2 the input
    address (SMMUv3 spec, event record formats)."""
    if index == 0:
        ev.details["stream_id"] = hex(value >> 32)
    elif index == 2:
        ev.details["address"] = hex(value)


def _fold_smmu(events: list[Event], ev: _Open) -> None:
    """One event per failed access arrives; consecutive ones with the same event id and stream
    id are one fault (a DMA), counted."""
    sid = ev.details.get("stream_id", "?")
    # Event id and stream id are identities, not addresses: kept as they are.
    sig = f"smmu_event:{ev.details['event_id']}:sid {sid}"
    prev = events[-1] if events else None
    if prev is not None and prev.kind == "smmu_event" and prev.signature == sig:
        details = dict(prev.details)
        details["count"] = str(int(details.get("count", "1")) + 1)
        events[-1] = Event(prev.kind, prev.signature, prev.summary, prev.lines + tuple(ev.lines),
                           prev.first_seq, ev.last_seq, tuple(sorted(details.items())), prev.usec)
        return
    events.append(Event("smmu_event", sig, ev.summary, tuple(ev.lines), ev.first_seq,
                        ev.last_seq, tuple(sorted(ev.details.items())), ev.usec))


def format_records(records: Iterable[Record]) -> str:
    """Records as lines of text, each with its time in seconds: a kernel log slice."""
    return "\n".join(f"[{(r.usec or 0) / 1e6:12.6f}] {r.text}" for r in records)


def events_of(text: str) -> list[Event]:
    return classify(parse_records(text))


def splats(events: Iterable[Event]) -> list[Event]:
    return [e for e in events if e.is_splat]
