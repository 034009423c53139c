"""The differ's pure builders: the shell snippets the guest runs, and the "auto" type.

The snippets name absolute /sys paths, so they are checked as text (and for shell syntax with
``sh -n``); only the branches for a device that does not exist are run for real, since they
touch nothing."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.differ import SetupFacts, auto_type, parse_setup, setup_script, types_script
from harness.steps import Bind, DriverChoice, TypeWrite, Via, bind_errno, bind_script
from harness.sysfs import GroupMember, IommuGroup

A, B = "0000:00:03.0", "0000:01:01.0"
ABSENT = "ih-test-absent-device"  # no such entry under /sys/bus/pci/devices
SH = shutil.which("sh")
needs_sh = pytest.mark.skipif(SH is None, reason="no /bin/sh")


def set_type_script(bdf: str, request: str) -> str:
    return TypeWrite("d", request).script({"d": bdf})


def group(gid: int, typ: str, *bdfs: str) -> IommuGroup:
    return IommuGroup(gid, typ, tuple(GroupMember(b, "1234:11e8", None) for b in bdfs))


def sh(script: str, *, check_syntax_only: bool = False) -> subprocess.CompletedProcess[str]:
    assert SH is not None
    argv = [SH, "-n", "-c", script] if check_syntax_only else [SH, "-c", script]
    return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)


@pytest.fixture(autouse=True)
def _absent_is_absent() -> None:
    if Path(f"/sys/bus/pci/devices/{ABSENT}").exists():
        pytest.skip(f"{ABSENT} exists on this host")


# ------------------------------------------------------------------ auto_type

def test_auto_type_is_the_most_common_type_of_the_untouched_groups() -> None:
    groups = [group(0, "DMA-FQ", "0000:00:00.0"), group(1, "DMA-FQ", "0000:00:1f.0"),
              group(2, "identity", "0000:00:02.0"), group(3, "identity", A),
              group(4, "identity", B, "0000:01:02.0")]
    # The test devices' groups (3 and 4) are identity, but somebody may have written those.
    assert auto_type(groups, [A, B]) == "DMA-FQ"
    assert auto_type(groups, []) == "identity"


def test_a_group_with_any_test_device_is_left_out() -> None:
    groups = [group(0, "DMA", "0000:00:00.0"), group(1, "identity", B, "0000:00:1f.0"),
              group(2, "identity", "0000:00:1f.3"), group(3, "identity", "0000:00:1f.2"),
              group(5, "DMA", "0000:00:19.0")]
    assert auto_type(groups, []) == "identity"
    assert auto_type(groups, [B, "0000:00:1f.3"]) == "DMA"
    assert auto_type(groups, ["0000:00:1f.0", "0000:00:1f.3"]) == "DMA"


def test_auto_type_defaults_to_dma() -> None:
    assert auto_type([], [A]) == "DMA"
    assert auto_type([group(3, "identity", A), group(4, "DMA-FQ", B)], [A, B]) == "DMA"


# ------------------------------------------------------------------ types_script

def test_types_script_reads_each_device_in_order() -> None:
    text = types_script([A, B])
    assert text.startswith(f"for d in {A} {B}; do ")
    assert "cat /sys/bus/pci/devices/$d/iommu_group/type 2>/dev/null || echo none" in text


@needs_sh
def test_types_script_says_none_without_a_group() -> None:
    r = sh(types_script([ABSENT, ABSENT]))
    assert (r.returncode, r.stdout.split(), r.stderr) == (0, ["none", "none"], "")


# ------------------------------------------------------------------ set_type_script

def test_set_type_script_writes_the_groups_type_file() -> None:
    t = f"/sys/bus/pci/devices/{A}/iommu_group/type"
    text = set_type_script(A, "DMA-FQ")
    assert text.startswith(f"if [ -e {t} ]; then (echo DMA-FQ > {t}) 2>&1 | tr -d '\\n'; ")
    assert "else printf 'No such file or directory'; fi; echo" in text


@pytest.mark.parametrize(("request_", "written"), [
    ("identity", "echo identity >"),
    ("DMA", "echo DMA >"),
    ("bogus value", "echo 'bogus value' >"),
    ("x; reboot", "echo 'x; reboot' >"),
    ("$(id)", "echo '$(id)' >"),
    ("it's", "echo 'it'\"'\"'s' >"),
])
def test_set_type_script_quotes_the_request(request_: str, written: str) -> None:
    assert written in set_type_script(A, request_)


@needs_sh
@pytest.mark.parametrize("request_", ["identity", "x; reboot", "$(id)", "it's", "a\nb"])
def test_set_type_script_is_valid_shell(request_: str) -> None:
    r = sh(set_type_script(A, request_), check_syntax_only=True)
    assert (r.returncode, r.stderr) == (0, "")


@needs_sh
def test_set_type_script_without_a_group_reads_as_enoent() -> None:
    r = sh(set_type_script(ABSENT, "identity"))
    assert (r.returncode, r.stdout) == (0, "No such file or directory\n")
    assert bind_errno(r.stdout.strip()) == -errno.ENOENT  # what the model says: -ENOENT


# ------------------------------------------------------------------ setup_script

@needs_sh
def test_setup_script_reports_each_bind_in_order() -> None:
    text = setup_script([(ABSENT, DriverChoice.OWNED), (ABSENT, DriverChoice.NONE)])
    assert sh(text, check_syntax_only=True).returncode == 0
    r = sh(text)
    # Binding a device that is not there fails; leaving it without a driver succeeds.
    assert (r.returncode, parse_setup(r.stdout), r.stderr) == (0, [False, True], "")


def test_a_bind_found_done_holds_like_one_done_now() -> None:
    assert parse_setup("already\nbound\nfailed\n") == [True, True, False]
    assert "then echo already" in setup_script([(A, DriverChoice.OWNED)])


def test_setup_facts_round_trip_through_json() -> None:
    facts = SetupFacts(drivers={A: "ih_edu_owned", B: None}, bound=("edu0",),
                       types={A: "DMA"}, auto_type="DMA", noop=True)
    assert SetupFacts.from_json(json.loads(json.dumps(facts.to_json()))) == facts


@needs_sh
def test_setup_script_with_nothing_to_bind_is_a_no_op() -> None:
    r = sh(setup_script([]) + "; echo end")
    assert (r.returncode, r.stdout) == (0, "end\n")


# ------------------------------------------------------------------ bind_script

def test_bind_script_through_the_drivers_bind_file() -> None:
    d = f"/sys/bus/pci/devices/{A}"
    assert bind_script(A, "owned") == (
        f"[ ! -e {d}/driver ] || echo {A} > {d}/driver/unbind; "
        f"echo ih_edu_owned > {d}/driver_override && "
        f"echo {A} > /sys/bus/pci/drivers/ih_edu_owned/bind")
    assert bind_script(A, "dma_api", "bind").endswith(
        f"echo ih_edu > {d}/driver_override && echo {A} > /sys/bus/pci/drivers/ih_edu/bind")


@pytest.mark.parametrize(("kind", "driver"), [("owned", "ih_edu_owned"), ("dma_api", "ih_edu")])
def test_bind_script_through_drivers_probe(kind: str, driver: str) -> None:
    d = f"/sys/bus/pci/devices/{A}"
    text = bind_script(A, kind, "drivers_probe")
    assert text.endswith(f"echo {driver} > {d}/driver_override && "
                         f"echo {A} > /sys/bus/pci/drivers_probe")
    assert "/drivers/ih_edu" not in text
    assert text.startswith(f"[ ! -e {d}/driver ] || echo {A} > {d}/driver/unbind; ")


@pytest.mark.parametrize("via", ["bind", "drivers_probe"])
def test_bind_script_to_no_driver_only_unbinds(via: str) -> None:
    d = f"/sys/bus/pci/devices/{A}"
    assert bind_script(A, "none", via) == \
        f"echo > {d}/driver_override; [ ! -e {d}/driver ] || echo {A} > {d}/driver/unbind"


@needs_sh
@pytest.mark.parametrize(("kind", "via"), [("owned", "bind"), ("dma_api", "drivers_probe"),
                                           ("none", "bind")])
def test_bind_script_is_valid_shell(kind: str, via: str) -> None:
    r = sh(bind_script(A, kind, via), check_syntax_only=True)
    assert (r.returncode, r.stderr) == (0, "")


def test_bind_script_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="nvme"):
        bind_script(A, "nvme")


@needs_sh
def test_a_bind_steps_script_reports_each_devices_status_and_error() -> None:
    # Against a device that does not exist: the write fails, the line carries the status and
    # the shell's error text (one line), and the step's answer is the errno behind it.
    step = Bind((("d", DriverChoice.OWNED), ("e", DriverChoice.NONE)), Via.BIND)
    r = sh(step.script({"d": ABSENT, "e": ABSENT}))
    first, _second = r.stdout.splitlines()
    status, error = first.split(" ", 1)
    assert status != "0" and "driver_override" in error, first
    assert step.answer(r.stdout) == (bind_errno(error), False)
    assert step.answer("0 \n0 \n") == (0, False)
    assert step.answer("0 \n1 sh: write error: Device or resource busy\n") == \
        (-errno.EBUSY, False)
