"""Fault tolerance with injected faults, on every platform: a guest panic, a guest that stops
answering, a splat the test did not declare, two harness runs at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import GuestDied, GuestHung
from harness.pytest_plugin import GuestPool
from tests.integration.helpers import alive

HARNESS = [sys.executable, "-m", "harness.cli"]
# The fault tests' guests are their own (a topology key of the pool no other test uses): a
# panic kills its guest and a requested WARNING stays in its log.
FAULTS = Path(__file__).parent / "topology-faults.toml"


@pytest.mark.harness_expect("panic")
def test_a_guest_panic_fails_fast_with_the_panic_and_the_next_guest_is_fresh(
        guest_pool: GuestPool, platform: str) -> None:
    g = guest_pool.get(platform, topology=FAULTS)
    assert g.qemu is not None
    pid = g.qemu.pid
    started = time.monotonic()
    with pytest.raises(GuestDied) as info:
        g.run("echo c > /proc/sysrq-trigger", timeout=60)
    assert time.monotonic() - started < 10
    assert "panic:sysrq triggered crash" in str(info.value)
    assert [getattr(e, "signature", None) for e in info.value.events] == \
        ["panic:sysrq triggered crash"]
    assert info.value.console_tail  # the console's last lines come with the error
    assert pid is not None and not alive(pid)
    fresh = guest_pool.get(platform, topology=FAULTS)
    assert fresh is not g and fresh.run("echo alive").stdout == b"alive\n"
    assert g.console_log.exists() and "sysrq" in g.console_log.read_text()  # the log is kept


@pytest.mark.harness_expect("oops", "panic")
def test_an_oops_in_a_module_names_the_culprit(guest_pool: GuestPool, platform: str) -> None:
    g = guest_pool.get(platform, topology=FAULTS)
    with pytest.raises(GuestDied) as info:
        g.load_module("ih_smoke", "fault=oops")
    message = str(info.value)
    assert "oops:" in message and "NULL pointer dereference:ih_smoke_init" in message


FAULT_KIND = {"x86_64-vtd": "dmar_fault", "aarch64-smmuv3": "smmu_event"}


def test_dma_to_an_unmapped_iova_raises_the_iommu_fault_in_that_step(
        guest_pool: GuestPool, platform: str) -> None:
    g = guest_pool.fresh(platform)
    with g:
        g.bind_topology("pci-stub")  # on SMMUv3 the device needs a driver to have a group
        quiet = g.run_traced("true")
        assert quiet.events == ()
        step = g.run_traced('insmod "/lib/modules/$(uname -r)/extra/ih_smoke.ko" fault=dma && '
                            "rmmod ih_smoke")
        assert step.result.exit_code == 0, step.result.stderr
        faults = [e for e in step.events if e.kind == FAULT_KIND[platform]]
        assert len(faults) == 1, step.events
        assert faults[0].detail("address") == "0x900000"
        assert not [e for e in step.events if e.is_splat]


def test_a_guest_that_stops_answering_is_killed_at_the_deadline(guest_pool: GuestPool,
                                                                platform: str) -> None:
    with guest_pool.fresh(platform) as g:
        assert g.qemu is not None and g.qemu.qmp is not None
        pid = g.qemu.pid
        g.qemu.qmp.cmd("stop")  # the vCPUs stop: the kernel answers nothing any more
        started = time.monotonic()
        with pytest.raises(GuestHung, match="stopped answering"):
            g.run("true", timeout=3)
        assert time.monotonic() - started < 15
        assert pid is not None and not alive(pid)
        # The logs stay: a restored guest's console from its restore on, its boot log beside.
        assert g.console_log.exists() and (g.out_dir / "boot-console.log").stat().st_size > 0


def test_an_undeclared_splat_is_caught_with_its_report(guest_pool: GuestPool,
                                                       platform: str) -> None:
    g = guest_pool.get(platform, topology=FAULTS)
    guest_pool.begin_test()  # what the plugin does around every test body, here by hand
    g.load_module("ih_smoke", "fault=warn")
    g.unload_module("ih_smoke")
    message = guest_pool.end_test("inner-test-warn", ())
    assert "unexpected kernel warning: warning:ih_smoke_init" in message
    assert "ih_smoke.c:36" in message or "ih_smoke_init+" in message
    assert "kernel log slice:" in message
    # Declared, the same warning passes; an expectation that does not come fails.
    guest_pool.begin_test()
    g.load_module("ih_smoke", "fault=warn")
    g.unload_module("ih_smoke")
    assert guest_pool.end_test("inner-test-warn-declared", ("warning:ih_smoke_init",)) == ""
    guest_pool.begin_test()
    assert "expected kernel event 'dmar_fault'" in guest_pool.end_test("inner-none", (
        "dmar_fault",))
    guest_pool.begin_test()  # leave the pool as the plugin expects for this test's own verdict


def test_two_harness_runs_at_once_do_not_collide(tmp_path: Path, platform: str) -> None:
    procs = [subprocess.Popen([*HARNESS, "boot", "--platform", platform, "--out", str(tmp_path),
                               "--", f"echo run{i}; uname -m"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for i, (p, (out, err)) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, err
        assert out.startswith(f"run{i}\n".encode())
    assert len(list(tmp_path.glob("*/console.log"))) == 2
