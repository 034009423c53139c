"""Groups read from real guests (tests/data) against the topology predictions."""

from __future__ import annotations

import dataclasses

import pytest

from harness.platforms import X86_64_VTD
from harness.prepare import TOPOLOGIES_DIR
from harness.sysfs import (
    GroupsParseError,
    compare_groups,
    comparison_json,
    diff_snapshots,
    format_comparison,
    parse_groups,
)
from harness.topology import load_topology, predict_groups
from tests.conftest import DATA


def predicted(name: str):  # type: ignore[no-untyped-def]
    return predict_groups(load_topology(TOPOLOGIES_DIR / f"{name}.toml", X86_64_VTD), X86_64_VTD)


@pytest.mark.parametrize(("data", "topology"), [
    ("groups-x86_64-vtd-6.1-default.txt", "default"),
    ("groups-x86_64-vtd-6.12-mixed.txt", "mixed"),
])
def test_real_guest_groups_match_prediction(data: str, topology: str) -> None:
    actual = parse_groups((DATA / data).read_text())
    cmp = compare_groups(predicted(topology), actual)
    assert cmp.ok, format_comparison(cmp)
    assert comparison_json(cmp)["ok"] is True


def test_parse_reads_ids_types_and_drivers() -> None:
    groups = parse_groups((DATA / "groups-x86_64-vtd-6.1-default.txt").read_text())
    bridge = next(g for g in groups if "0000:00:02.0" in g.bdfs)
    assert bridge.type == "DMA"
    assert [m.pci_id for m in bridge.members] == ["1b36:000e", "1234:11e8", "1234:11e8"]
    virtio = next(g for g in groups if "0000:00:18.0" in g.bdfs)
    assert virtio.members[0].driver == "virtio-pci"
    assert bridge.members[0].driver is None


def test_a_split_group_is_reported_missing_and_unexpected() -> None:
    actual = list(parse_groups((DATA / "groups-x86_64-vtd-6.1-default.txt").read_text()))
    bridge = next(g for g in actual if "0000:00:02.0" in g.bdfs)
    actual.remove(bridge)
    actual += [dataclasses.replace(bridge, members=bridge.members[:1]),
               dataclasses.replace(bridge, id=99, members=bridge.members[1:])]
    cmp = compare_groups(predicted("default"), actual)
    assert not cmp.ok
    assert [m.bdfs for m in cmp.missing] == [bridge.bdfs]
    assert {g.id for g in cmp.unexpected} == {bridge.id, 99}
    text = format_comparison(cmp)
    assert "MISSING" in text and "UNEXPECTED" in text and "DIFFER" in text


def test_a_wrong_type_or_pci_id_is_a_mismatch() -> None:
    actual = [dataclasses.replace(g, type="identity") if g.id == 2 else g
              for g in parse_groups((DATA / "groups-x86_64-vtd-6.1-default.txt").read_text())]
    cmp = compare_groups(predicted("default"), actual)
    assert not cmp.ok
    assert any("type identity, predicted DMA" in p for m in cmp.matches for p in m.problems)


def test_garbage_is_a_parse_error() -> None:
    with pytest.raises(GroupsParseError, match="line 1"):
        parse_groups("hello\n")
    assert parse_groups("") == ()


SNAPSHOT_TAGS = ["x86-6.1", "x86-6.12", "arm64-6.1", "arm64-6.12"]


@pytest.mark.parametrize("tag", SNAPSHOT_TAGS)
def test_snapshot_diff_of_binding_every_device_to_pci_stub(tag: str) -> None:
    before = parse_groups((DATA / f"snapshot-{tag}-unbound.txt").read_text())
    after = parse_groups((DATA / f"snapshot-{tag}-pci-stub.txt").read_text())
    lines = diff_snapshots(before, after)
    assert diff_snapshots(before, before) == []
    if tag.startswith("x86"):
        # VT-d: every device had its group already; only the drivers change.
        assert lines == ["group 1: 0000:01:01.0 driver - -> pci-stub",
                         "group 1: 0000:01:02.0 driver - -> pci-stub",
                         "group 2: 0000:00:03.0 driver - -> pci-stub",
                         "group 3: 0000:00:04.0 driver - -> pci-stub"]
    else:
        # SMMUv3: groups appear at probe; the second device behind the bridge gets none.
        assert lines == ["group 3 added: type DMA, 0000:00:03.0 (1234:11e8, pci-stub)",
                         "group 4 added: type DMA, 0000:00:04.0 (1234:11e8, pci-stub)",
                         "group 0: 0000:01:01.0 (1234:11e8, pci-stub) joined"]


def test_reserved_regions_are_read_and_diffed() -> None:
    groups = parse_groups((DATA / "snapshot-x86-6.1-unbound.txt").read_text())
    ich9 = next(g for g in groups if "0000:00:1f.0" in g.bdfs)
    # The ISA bridge's floppy workaround and the MSI window (intel-iommu, QEMU q35).
    assert ("0x0000000000000000", "0x0000000000ffffff", "direct-relaxable") in ich9.reserved
    assert ("0x00000000fee00000", "0x00000000feefffff", "msi") in ich9.reserved
    changed = [dataclasses.replace(g, reserved=()) if g.id == ich9.id else g for g in groups]
    assert f"group {ich9.id}: reserved region 0x00000000fee00000 0x00000000feefffff msi gone" \
        in diff_snapshots(groups, changed)
    removed = [g for g in groups if g.id != ich9.id]
    assert diff_snapshots(groups, removed) == [
        f"group {ich9.id} removed (0000:00:1f.0, 0000:00:1f.2, 0000:00:1f.3)"]
