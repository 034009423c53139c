"""Topology files: parsing, errors, -device arguments and predicted groups (no QEMU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.platforms import X86_64_VTD
from harness.prepare import TOPOLOGIES_DIR
from harness.topology import (
    device_args,
    load_topology,
    parse_topology,
    predict_groups,
)


def groups_of(topo_name: str) -> set[frozenset[str]]:
    topo = load_topology(TOPOLOGIES_DIR / f"{topo_name}.toml", X86_64_VTD)
    return {g.bdfs for g in predict_groups(topo, X86_64_VTD)}


def test_default_topology_predicts_two_singletons_and_a_bridge_group() -> None:
    groups = groups_of("default")
    assert frozenset({"0000:00:03.0"}) in groups
    assert frozenset({"0000:00:04.0"}) in groups
    assert frozenset({"0000:00:02.0", "0000:01:01.0", "0000:01:02.0"}) in groups
    # plus the machine's own: host bridge, ICH9 trio, control console, network
    assert frozenset({"0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"}) in groups
    assert len(groups) == 7


def test_mixed_topology_numbers_bridge_buses_in_slot_order() -> None:
    groups = groups_of("mixed")
    assert frozenset({"0000:00:05.0", "0000:01:03.0"}) in groups
    assert frozenset({"0000:00:07.0", "0000:02:01.0", "0000:02:02.0", "0000:02:04.0"}) in groups
    assert frozenset({"0000:00:06.0", "0000:00:06.1"}) in groups  # one multifunction slot
    assert frozenset({"0000:00:09.0"}) in groups


def test_device_args_place_functions_and_bridges() -> None:
    topo = load_topology(TOPOLOGIES_DIR / "mixed.toml", X86_64_VTD)
    args = device_args(topo, X86_64_VTD)
    values = [args[i + 1] for i in range(0, len(args), 2)]
    assert all(args[i] == "-device" for i in range(0, len(args), 2))
    assert values[0] == "pcie-pci-bridge,id=bra,bus=pcie.0,addr=0x5"
    assert "edu,id=mf0,bus=pcie.0,addr=0x6.0x0,multifunction=on" in values
    assert "edu,id=mf1,bus=pcie.0,addr=0x6.0x1" in values
    assert "edu,id=b3,bus=brb,addr=0x4" in values
    # bridges come before the devices that name them as their bus
    assert values.index("pcie-pci-bridge,id=brb,bus=pcie.0,addr=0x7") < values.index(
        "edu,id=b1,bus=brb,addr=0x1")


def test_dma_mask_is_passed_to_qemu() -> None:
    topo = parse_topology('[[device]]\nid = "e"\nslot = 3\ndma_mask = 0xffffffff\n', X86_64_VTD)
    assert device_args(topo, X86_64_VTD)[1] == \
        "edu,id=e,bus=pcie.0,addr=0x3.0x0,dma_mask=0xffffffff"


def test_the_vfio_topologies_give_each_device_its_own_group() -> None:
    assert {frozenset({"0000:00:03.0"})} <= groups_of("vfio")
    with_igb = load_topology(TOPOLOGIES_DIR / "vfio-igb.toml", X86_64_VTD)
    assert "igb,id=igb0,bus=pcie.0,addr=0x5.0x0" in device_args(with_igb, X86_64_VTD)
    predicted = {g.bdfs: g for g in predict_groups(with_igb, X86_64_VTD)}
    assert frozenset({"0000:00:05.0"}) in predicted
    assert [m.pci_id for m in predicted[frozenset({"0000:00:05.0"})].members] == ["8086:10c9"]


@pytest.mark.parametrize(("text", "needle"), [
    ("[[device]\n", "not valid TOML"),
    ('colour = "red"\n', "unknown key(s) colour"),
    ("[[device]]\nslot = 3\n", "device #1: missing 'id'"),
    ('[[device]]\nid = "e"\n', "device 'e': missing 'slot'"),
    ('[[device]]\nid = "e"\nslot = "3"\n', "'slot' must be an integer"),
    ('[[device]]\nid = "E!"\nslot = 3\n', "id 'E!' is not a valid name"),
    ('[[device]]\nid = "e"\nslot = 3\n[[device]]\nid = "e"\nslot = 4\n', "used twice"),
    ('[[device]]\nid = "e"\nslot = 0x18\n', "used by the harness's virtio-serial-pci"),
    ('[[device]]\nid = "e"\nslot = 0x1f\n', "out of range"),
    ('[[device]]\nid = "e"\nslot = 3\nbridge = "nope"\n', "unknown bridge 'nope'"),
    ('[[device]]\nid = "a"\nslot = 3\n[[device]]\nid = "b"\nslot = 3\n', "is taken by 'a'"),
    ('[[device]]\nid = "a"\nslot = 3\nfunction = 1\n', "has no function 0"),
    ('[[device]]\nid = "a"\nslot = 3\nfunction = 8\n', "function 8 out of range"),
    ('[[device]]\nid = "a"\nslot = 3\nkind = "nvme"\n', "unknown kind 'nvme'"),
    ('[[device]]\nid = "a"\nslot = 3\nspeed = 1\n', "unknown key(s) speed"),
    ('[[bridge]]\nid = "b"\nslot = 2\n[[device]]\nid = "a"\nslot = 2\n', "taken by a bridge"),
    ('[[bridge]]\nid = "b"\nslot = 2\n[[device]]\nid = "a"\nbridge = "b"\nslot = 1\n'
     '[[device]]\nid = "c"\nbridge = "b"\nslot = 1\n', "behind 'b' is taken by 'a'"),
    ("device = 3\n", "'device' must be an array of tables"),
    ('[[device]]\nid = "n"\nslot = 3\nkind = "igb"\ndma_mask = 0xff\n', "property of edu"),
    ('[[bridge]]\nid = "b"\nslot = 2\n[[device]]\nid = "n"\nbridge = "b"\nslot = 1\n'
     'kind = "igb"\n', "igb goes on the root bus"),
    ('[[device]]\nid = "n"\nslot = 3\nkind = "igb"\n[[device]]\nid = "e"\nslot = 0x13\n',
     "its VFs need root-bus slot 0x13, which is taken"),
    ('[[device]]\nid = "n"\nslot = 7\nkind = "igb"\n', "slot 0x18, which is not free"),
])
def test_malformed_topologies_name_the_problem(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_topology(text, X86_64_VTD, source="t.toml")
    message = str(info.value)
    assert needle in message
    assert message.startswith("topology t.toml: ")
    assert "\n" not in message


def test_missing_topology_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot read topology file"):
        load_topology(Path("/nonexistent/topo.toml"), X86_64_VTD)
