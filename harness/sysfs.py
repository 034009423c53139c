"""IOMMU groups read from the guest's sysfs, and their comparison with a prediction (pure).

The guest runs :data:`GROUPS_SCRIPT`; :func:`parse_groups` turns its output into values.
Layout read: /sys/kernel/iommu_groups/N/{type,devices/*} (Documentation/ABI/testing/
sysfs-kernel-iommu_groups) and /sys/bus/pci/devices/*/{vendor,device,driver}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .topology import PredictedGroup

# Per group: "G <group> <type>", then "R <start> <end> <type>" per reserved region
# (Documentation/ABI/testing/sysfs-kernel-iommu_groups), then per member
# "D <bdf> <vendor> <device> <driver or ->".
# Shell builtins only (read, cd, echo): under TCG each process the guest starts costs about
# 10 ms, and with a command substitution per file this script took 0.7 s on a q35 guest.
GROUPS_SCRIPT = r"""
for g in /sys/kernel/iommu_groups/*; do
  [ -d "$g" ] || continue
  { read -r t < "$g/type"; } 2>/dev/null || t=none
  echo "G ${g##*/} $t"
  if [ -r "$g/reserved_regions" ]; then
    while read -r a b c; do echo "R $a $b $c"; done < "$g/reserved_regions"
  fi
  for d in "$g"/devices/*; do
    [ -e "$d" ] || continue
    { read -r v < "$d/vendor"; } 2>/dev/null || v=-
    { read -r i < "$d/device"; } 2>/dev/null || i=-
    drv=-; cd -P "$d/driver" 2>/dev/null && drv=${PWD##*/}
    echo "D ${d##*/} $v $i $drv"
  done
done
"""


def bind_script(bdf: str, driver: str) -> str:
    """Bind one PCI device to ``driver`` (unbinding it first), through driver_override and
    drivers_probe (Documentation/ABI/testing/sysfs-bus-pci); prints the driver it ends up with."""
    d = f"/sys/bus/pci/devices/{bdf}"
    return (f"[ -e {d}/driver ] && echo {bdf} > {d}/driver/unbind; "
            f"echo {driver} > {d}/driver_override && echo {bdf} > /sys/bus/pci/drivers_probe; "
            f"[ -e {d}/driver ] && basename \"$(readlink {d}/driver)\"")


class GroupsParseError(ValueError):
    pass


@dataclass(frozen=True)
class GroupMember:
    bdf: str
    pci_id: str
    driver: str | None


@dataclass(frozen=True)
class IommuGroup:
    id: int
    type: str
    members: tuple[GroupMember, ...]
    reserved: tuple[tuple[str, str, str], ...] = ()  # (start, end, type) as sysfs prints them

    @property
    def bdfs(self) -> frozenset[str]:
        return frozenset(m.bdf for m in self.members)


def _hex_id(value: str) -> str:
    return value[2:] if value.startswith("0x") else value


def parse_groups(text: str) -> tuple[IommuGroup, ...]:
    groups: list[IommuGroup] = []
    current: tuple[int, str] | None = None
    members: list[GroupMember] = []
    reserved: list[tuple[str, str, str]] = []

    def flush() -> None:
        if current is not None:
            groups.append(IommuGroup(current[0], current[1], tuple(members), tuple(reserved)))

    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "G" and len(fields) == 3 and fields[1].isdigit():
            flush()
            current, members, reserved = (int(fields[1]), fields[2]), [], []
        elif fields[0] == "R" and len(fields) == 4 and current is not None:
            reserved.append((fields[1], fields[2], fields[3]))
        elif fields[0] == "D" and len(fields) == 5 and current is not None:
            _, bdf, vendor, device, driver = fields
            members.append(GroupMember(bdf, f"{_hex_id(vendor)}:{_hex_id(device)}",
                                       None if driver == "-" else driver))
        else:
            raise GroupsParseError(f"line {lineno}: unexpected {line!r}")
    flush()
    return tuple(sorted(groups, key=lambda g: g.id))


def diff_snapshots(before: Sequence[IommuGroup], after: Sequence[IommuGroup]) -> list[str]:
    """What changed between two readings of the IOMMU state, one readable line per change.

    Groups are followed by their id; devices by their address (a device that moved between
    groups shows as leaving one and joining the other)."""
    lines: list[str] = []
    old = {g.id: g for g in before}
    new = {g.id: g for g in after}
    for gid in sorted(old.keys() - new.keys()):
        lines.append(f"group {gid} removed ({', '.join(sorted(old[gid].bdfs))})")
    for gid in sorted(new.keys() - old.keys()):
        g = new[gid]
        lines.append(f"group {gid} added: type {g.type}, "
                     f"{', '.join(_member_text(m) for m in g.members)}")
    for gid in sorted(old.keys() & new.keys()):
        a, b = old[gid], new[gid]
        if a.type != b.type:
            lines.append(f"group {gid}: type {a.type} -> {b.type}")
        was = {m.bdf: m for m in a.members}
        now = {m.bdf: m for m in b.members}
        for bdf in sorted(was.keys() - now.keys()):
            lines.append(f"group {gid}: {bdf} left")
        for bdf in sorted(now.keys() - was.keys()):
            lines.append(f"group {gid}: {_member_text(now[bdf])} joined")
        for bdf in sorted(was.keys() & now.keys()):
            if was[bdf].driver != now[bdf].driver:
                lines.append(f"group {gid}: {bdf} driver {was[bdf].driver or '-'} -> "
                             f"{now[bdf].driver or '-'}")
        for region in sorted(set(a.reserved) - set(b.reserved)):
            lines.append(f"group {gid}: reserved region {' '.join(region)} gone")
        for region in sorted(set(b.reserved) - set(a.reserved)):
            lines.append(f"group {gid}: reserved region {' '.join(region)} new")
    return lines


def _member_text(m: GroupMember) -> str:
    return f"{m.bdf} ({m.pci_id}, {m.driver or 'no driver'})"


@dataclass(frozen=True)
class GroupMatch:
    predicted: PredictedGroup
    actual: IommuGroup
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroupComparison:
    matches: tuple[GroupMatch, ...] = ()
    missing: tuple[PredictedGroup, ...] = ()
    unexpected: tuple[IommuGroup, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected and all(
            not m.problems for m in self.matches)


def compare_groups(predicted: Sequence[PredictedGroup],
                   actual: Sequence[IommuGroup]) -> GroupComparison:
    """Pair groups by their member set; then compare PCI ids and default domain types."""
    by_members = {g.bdfs: g for g in actual}
    matches: list[GroupMatch] = []
    missing: list[PredictedGroup] = []
    used: set[int] = set()
    for pred in predicted:
        act = by_members.get(pred.bdfs)
        if act is None:
            missing.append(pred)
            continue
        used.add(act.id)
        problems = []
        if pred.type and act.type != pred.type:
            problems.append(f"type {act.type}, predicted {pred.type}")
        ids = {m.bdf: m.pci_id for m in act.members}
        for m in pred.members:
            if ids[m.bdf] != m.pci_id:
                problems.append(f"{m.bdf} is {ids[m.bdf]}, predicted {m.pci_id}")
        matches.append(GroupMatch(pred, act, tuple(problems)))
    unexpected = tuple(g for g in actual if g.id not in used)
    return GroupComparison(tuple(matches), tuple(missing), unexpected)


def format_comparison(cmp: GroupComparison) -> str:
    """A table a person reads: actual groups with the prediction beside them."""
    lines = [f"{'group':>5}  {'type':<8} {'device':<13} {'pci id':<10} {'driver':<16} prediction"]
    for m in sorted(cmp.matches, key=lambda m: m.actual.id):
        verdict = "ok" if not m.problems else "MISMATCH: " + "; ".join(m.problems)
        names = {p.bdf: p.name for p in m.predicted.members}
        for i, mem in enumerate(m.actual.members):
            label = names.get(mem.bdf, "")
            first = i == 0
            lines.append(f"{m.actual.id if first else '':>5}  {m.actual.type if first else '':<8} "
                         f"{mem.bdf[5:]:<13} {mem.pci_id:<10} {mem.driver or '-':<16} "
                         f"{(verdict if i == 0 else '')} {label}".rstrip())
    for g in cmp.unexpected:
        for i, mem in enumerate(g.members or (GroupMember("-", "-", None),)):
            lines.append(f"{g.id if i == 0 else '':>5}  {g.type if i == 0 else '':<8} "
                         f"{mem.bdf[5:]:<13} {mem.pci_id:<10} {mem.driver or '-':<16} "
                         f"{'UNEXPECTED: not predicted' if i == 0 else ''}".rstrip())
    for p in cmp.missing:
        members = ", ".join(f"{m.bdf[5:]} ({m.name or m.pci_id})" for m in p.members)
        lines.append(f"{'-':>5}  {p.type:<8} MISSING predicted group: {members}")
    lines.append("groups match the prediction" if cmp.ok else "groups DIFFER from the prediction")
    return "\n".join(lines)


def side_by_side(docs: Sequence[Mapping[str, Any]]) -> str:
    """One row per device, one column per platform: the group it is in there (from the JSON
    documents of :func:`comparison_json`, each with its "platform")."""
    columns: list[dict[str, str]] = []
    names: dict[str, str] = {}
    for doc in docs:
        col: dict[str, str] = {}
        for g in doc["groups"]:
            for p in g["predicted"]["devices"]:
                names.setdefault(p["bdf"], p["name"])
            mark = "" if not g["problems"] else "!"
            for d in g["devices"]:
                col[d["bdf"]] = f"group {g['id']}{mark}"
        for g in doc["unexpected"]:
            for d in g["devices"]:
                col[d["bdf"]] = f"group {g['id']} (unexpected)"
        for g in doc["missing"]:
            for p in g["devices"]:
                names.setdefault(p["bdf"], p["name"])
                col.setdefault(p["bdf"], "MISSING")
        columns.append(col)
    width = max(18, *(len(str(d["platform"])) + 2 for d in docs))
    head = f"{'device':<14}{'name':<10}" + "".join(f"{d['platform']:<{width}}" for d in docs)
    rows = [head]
    for bdf in sorted(set().union(*columns)):
        rows.append(f"{bdf[5:]:<14}{names.get(bdf, ''):<10}"
                    + "".join(f"{col.get(bdf, 'no group'):<{width}}" for col in columns))
    rows.append(f"{'':<24}" + "".join(
        f"{'matches' if d['ok'] else 'DIFFERS':<{width}}" for d in docs))
    return "\n".join(r.rstrip() for r in rows)


def comparison_json(cmp: GroupComparison) -> dict[str, object]:
    def actual(g: IommuGroup) -> dict[str, object]:
        return {"id": g.id, "type": g.type,
                "devices": [{"bdf": m.bdf, "pci_id": m.pci_id, "driver": m.driver}
                            for m in g.members]}

    def predicted(p: PredictedGroup) -> dict[str, object]:
        return {"type": p.type, "devices": [{"bdf": m.bdf, "pci_id": m.pci_id, "name": m.name}
                                            for m in p.members]}

    return {
        "ok": cmp.ok,
        "groups": [dict(actual(m.actual), predicted=predicted(m.predicted),
                        problems=list(m.problems)) for m in cmp.matches],
        "unexpected": [actual(g) for g in cmp.unexpected],
        "missing": [predicted(p) for p in cmp.missing],
    }
