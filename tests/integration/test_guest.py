"""Real QEMU, real Debian kernels: boot, groups against the prediction, both transports."""

from __future__ import annotations

import pytest

from harness.channels import Shell
from harness.errors import CommandTimeout
from harness.guest import Guest
from harness.prepare import TOPOLOGIES_DIR
from harness.pytest_plugin import GuestPool
from harness.sysfs import compare_groups, format_comparison
from harness.topology import predict_groups


def test_guest_runs_the_requested_kernel_with_the_iommu_on(guest: Guest) -> None:
    assert guest.check("uname -r").strip() == guest.config.kernel.release
    assert "intel_iommu=on" in guest.check("cat /proc/cmdline")
    dmesg = guest.dmesg()
    assert "DMAR: IOMMU enabled" in dmesg
    assert "Oops" not in dmesg and "WARNING:" not in dmesg


@pytest.mark.parametrize("topology", ["default", "mixed"])
def test_groups_equal_the_prediction(guest_pool: GuestPool, topology: str) -> None:
    g = guest_pool.get(topology=TOPOLOGIES_DIR / f"{topology}.toml")
    cmp = compare_groups(predict_groups(g.config.topology, g.config.platform), g.groups())
    assert cmp.ok, format_comparison(cmp)


def test_debian_612_boots_and_forms_the_predicted_groups(guest_pool: GuestPool) -> None:
    g = guest_pool.get(kernel="debian:6.12")
    assert g.check("uname -r").startswith("6.12.")
    cmp = compare_groups(predict_groups(g.config.topology, g.config.platform), g.groups())
    assert cmp.ok, format_comparison(cmp)


@pytest.fixture(params=["serial", "ssh"])
def shell(request: pytest.FixtureRequest, guest: Guest) -> Shell:
    if request.param == "serial":
        assert guest.serial is not None
        return guest.serial
    return guest.ssh


def test_exit_codes_and_streams(shell: Shell) -> None:
    for code in (0, 1, 42, 255):
        assert shell.run(f"exit {code}").exit_code == code
    r = shell.run("echo out; echo err >&2; false")
    assert (r.stdout, r.stderr, r.exit_code) == (b"out\n", b"err\n", 1)


def test_tricky_output(shell: Shell) -> None:
    assert shell.run("printf 'no newline'").stdout == b"no newline"
    assert shell.run(r"printf '\036E\036X 0\036\000\377'").stdout == b"\x1eE\x1eX 0\x1e\x00\xff"
    r = shell.run("head -c 1048576 /dev/zero | tr '\\000' x", timeout=120)
    assert r.stdout == b"x" * 1048576


def test_a_command_that_times_out(shell: Shell) -> None:
    with pytest.raises(CommandTimeout):
        shell.run("sleep 30", timeout=1.5)
    assert shell.run("echo still here").stdout == b"still here\n"


def test_sysfs_is_read_from_the_guest_over_both_transports(guest: Guest) -> None:
    assert guest.serial is not None
    serial = guest.serial.run("ls /sys/kernel/iommu_groups | sort -n").stdout
    ssh = guest.ssh.run("ls /sys/kernel/iommu_groups | sort -n").stdout
    assert serial == ssh
    assert serial.split() == [str(g.id).encode() for g in guest.groups()]
