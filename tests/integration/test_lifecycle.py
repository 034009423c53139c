"""No QEMU outlives the harness (context exit, exceptions, Ctrl-C, SIGTERM, SIGKILL), and the
command line end to end, on every platform."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness import cli, runner
from harness.accel import kvm_device_usable, kvm_verdict
from harness.errors import GuestDied
from harness.guest import Guest
from harness.kernel import resolve_kernel
from harness.platforms import PLATFORMS
from harness.pytest_plugin import GuestPool
from harness.results import ScenarioResult
from harness.scenario import Scenario
from tests.integration.helpers import alive, children_named, wait_gone

HARNESS = [sys.executable, "-m", "harness.cli"]
IOMMU_OPTION = {"x86_64-vtd": "CONFIG_INTEL_IOMMU", "aarch64-smmuv3": "CONFIG_ARM_SMMU_V3"}


def test_context_exit_powers_off_and_reaps(guest_pool: GuestPool, platform: str) -> None:
    with guest_pool.fresh(platform, boot=True) as g:  # a booted guest is powered off
        assert g.started_from == "boot"
        assert g.qemu is not None and g.qemu.pid is not None
        pid = g.qemu.pid
        assert g.run("echo up").stdout == b"up\n"
    assert not alive(pid)
    assert pid not in children_named(os.getpid())


def test_an_exception_inside_the_guest_block_still_stops_qemu(guest_pool: GuestPool,
                                                              platform: str) -> None:
    pid = None
    with pytest.raises(RuntimeError, match="test body failed"), guest_pool.fresh(platform) as g:
        assert g.qemu is not None
        pid = g.qemu.pid
        raise RuntimeError("test body failed")
    assert pid is not None and not alive(pid)


def test_qemu_killed_from_outside_is_a_clear_error(guest_pool: GuestPool, platform: str) -> None:
    with guest_pool.fresh(platform) as g:
        assert g.qemu is not None and g.qemu.pid is not None
        os.kill(g.qemu.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(GuestDied, match="QEMU exited or was killed"):
            g.run("echo never", timeout=30)
        assert time.monotonic() - started < 10


def start_harness(tmp_path: Path, platform: str) -> tuple[subprocess.Popen[bytes], int]:
    """A harness running a long guest command; returns it and its QEMU's pid once ready. The
    command says so through the kernel log, which reaches the console log at once (its output
    goes to the harness only when it ends)."""
    proc = subprocess.Popen([*HARNESS, "boot", "--platform", platform, "--out", str(tmp_path),
                             "--", "echo ih-test-READY > /dev/kmsg; sleep 600"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        logs = list(tmp_path.glob("*/console.log"))
        if logs and b"ih-test-READY" in logs[0].read_bytes():
            qemu = children_named(proc.pid)
            assert len(qemu) == 1
            return proc, qemu[0]
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the harness did not get its guest ready in 120 s")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 128 + 15),
                                           (signal.SIGKILL, -9)])
def test_killing_the_harness_kills_qemu(tmp_path: Path, platform: str, sig: int,
                                       code: int) -> None:
    proc, qemu = start_harness(tmp_path, platform)
    proc.send_signal(sig)
    assert proc.wait(30) == code
    assert wait_gone(qemu, 10), f"QEMU {qemu} survived the harness's {signal.Signals(sig).name}"
    # The guest's logs are kept: the control channel's transcript (with the command sent), the
    # console (of a restored guest: from its restore on, its boot beside it).
    folders = [p.parent for p in tmp_path.glob("*/control.log")]
    assert len(folders) == 1 and b"\036B" in (folders[0] / "control.log").read_bytes()
    assert b"ih-test-READY" in (folders[0] / "console.log").read_bytes()
    boot_log = folders[0] / "boot-console.log"
    if not boot_log.exists():
        boot_log = folders[0] / "console.log"
    assert "Linux version" in boot_log.read_text()


def test_cli_boot_returns_the_command_exit_code(tmp_path: Path, platform: str) -> None:
    proc = subprocess.run([*HARNESS, "boot", "--platform", platform, "--out", str(tmp_path),
                           "--", "cat /proc/cmdline; exit 3"], capture_output=True, timeout=180,
                          check=False)
    assert proc.returncode == 3
    assert PLATFORMS[platform].cmdline[0].encode() in proc.stdout


def test_cli_boot_words_are_an_argv(tmp_path: Path, platform: str) -> None:
    proc = subprocess.run([*HARNESS, "boot", "--platform", platform, "--out", str(tmp_path),
                           "--", "sh", "-c", "echo 'a  b'; exit 7"], capture_output=True,
                          timeout=180, check=False)
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout == b"a  b\n"


def test_cli_boot_names_the_fatal_event_when_the_guest_dies(tmp_path: Path,
                                                           platform: str) -> None:
    proc = subprocess.run([*HARNESS, "boot", "--platform", platform, "--out", str(tmp_path),
                           "--", "sh", "-c", "echo c > /proc/sysrq-trigger"],
                          capture_output=True, timeout=180, check=False)
    assert proc.returncode == 2
    [line] = proc.stderr.decode().strip().splitlines()
    assert line.startswith("iommu-harness: error: the guest died during "), line
    assert "panic:sysrq triggered crash" in line, line


SCENARIOS = Path(__file__).parent.parent / "scenarios"


def test_cli_kernels_resolves_every_default_spec_on_both_arches() -> None:
    # Debian's archive, asked through the harness's own apt configuration.
    proc = subprocess.run([*HARNESS, "kernels", "--json"], capture_output=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    for spec in ("debian:6.1", "debian:6.12", "debian:7.2", "debian:newest"):
        assert set(doc[spec]) == {"amd64", "arm64"}, spec
        assert doc[spec]["amd64"]["release"].endswith("-amd64")
    assert doc["debian:6.1"]["amd64"]["layout"] == "classic"
    assert doc["debian:7.2"]["arm64"]["layout"] == "split"


def test_a_kernel_crash_fails_its_scenario_and_a_fresh_guest_runs_the_rest(
        tmp_path: Path, platform: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # The kernel under test panics during the first scenario (a real panic, injected through
    # sysrq): that scenario fails with the fatal event, the second runs on a guest of its own
    # as every scenario does, and the exit code is 1 (a failed test), not 2 (a harness
    # error): what git bisect run reads.
    real = runner.run_scenario
    seen: list[str] = []

    def crash_first(guest: Guest, scenario: Scenario, *rest: Any) -> ScenarioResult:
        seen.append(scenario.name)
        if len(seen) == 1:
            guest.run("echo c > /proc/sysrq-trigger")
        return real(guest, scenario, *rest)

    monkeypatch.setattr(runner, "run_scenario", crash_first)
    files = [str(SCENARIOS / "singleton-attach-detach.toml"),
             str(SCENARIOS / "second-domain-refused.toml")]
    code = cli.main(["scenario", *files, "--platform", platform, "--out", str(tmp_path),
                     "--json"])
    captured = capsys.readouterr()
    assert captured.out, captured.err
    doc = json.loads(captured.out)
    assert code == 1
    first, second = doc["runs"]
    assert first["outcome"] == "died" and "panic:sysrq triggered crash" in first["detail"]
    assert first["ok"] is False and first["steps"] == []
    assert second["outcome"] == "pass" and second["ok"] is True
    logs = sorted(tmp_path.glob("*/*/console.log"))  # a folder per scenario
    assert [p.parent.name[:3] for p in logs] == ["01-", "02-"]
    assert first["console_log"] == str(logs[0]) and second["console_log"] == str(logs[1])
    assert "sysrq" in logs[0].read_text() and "sysrq" not in logs[1].read_text()


def test_cli_groups_json(tmp_path: Path, platform: str) -> None:
    proc = subprocess.run([*HARNESS, "groups", "--platform", platform, "--bind", "pci-stub",
                           "--json", "--out", str(tmp_path)],
                          capture_output=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and doc["topology"] == "default" and doc["platform"] == platform
    assert doc["bound"] == ["edu0", "edu1", "edu2", "edu3"]
    edu = [g for g in doc["groups"] if any(d["pci_id"] == "1234:11e8" for d in g["devices"])]
    # The bridge group: bridge and both devices on VT-d; bridge and the first one on SMMUv3,
    # where the second shares its stream ID and gets no group (see predict_groups).
    assert sorted(len(g["devices"]) for g in edu) == (
        [1, 1, 3] if platform == "x86_64-vtd" else [1, 1, 2])


def test_cli_groups_on_all_platforms_side_by_side(tmp_path: Path) -> None:
    proc = subprocess.run([*HARNESS, "groups", "--platform", "all", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    header = next(line for line in proc.stdout.splitlines() if line.startswith("device"))
    assert header.split()[2:] == ["x86_64-vtd", "aarch64-smmuv3"]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("00:03.0"))
    assert row.split()[1:] == ["edu0", "group", "2", "no", "group"]


def test_accel_kvm_is_either_proven_or_refused_clearly(tmp_path: Path, platform: str) -> None:
    p = PLATFORMS[platform]
    kernel = resolve_kernel("debian:6.1", p)
    works = not kvm_device_usable(p) and kvm_verdict(p, kernel.boot_image).works
    started = time.monotonic()
    proc = subprocess.run([*HARNESS, "boot", "--platform", platform, "--accel", "kvm",
                           "--out", str(tmp_path), "--", "true"],
                          capture_output=True, text=True, timeout=180, check=False)
    if works:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 2
        assert proc.stderr.startswith("iommu-harness: error: KVM")
        assert len(proc.stderr.strip().splitlines()) == 1
        assert time.monotonic() - started < 60  # never a hang


def test_kernel_without_the_iommu_is_refused_naming_the_options(tmp_path: Path,
                                                                platform: str) -> None:
    option = IOMMU_OPTION[platform]
    kernel = resolve_kernel("debian:6.1", PLATFORMS[platform])
    assert kernel.kbuild_dir is not None and kernel.modules_dir is not None
    headers = tmp_path / "headers"
    (headers / "include" / "generated").mkdir(parents=True)
    (headers / "include" / "generated" / "utsrelease.h").write_text(
        f'#define UTS_RELEASE "{kernel.release}"\n')
    config = kernel.config_path.read_text().replace(f"{option}=y", f"# {option} is not set")
    (headers / ".config").write_text(config)
    proc = subprocess.run([*HARNESS, "boot", "--platform", platform,
                           "--kernel", str(kernel.image), "--headers", str(headers),
                           "--modules", str(kernel.modules_dir), "--out", str(tmp_path),
                           "--", "true"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert f"needs {option}=y" in proc.stderr
    assert not list(tmp_path.glob("*/console.log"))  # refused before any boot


def test_prebuilt_image_with_headers_and_modules_boots(tmp_path: Path, platform: str) -> None:
    kernel = resolve_kernel("debian:6.1", PLATFORMS[platform])
    assert kernel.kbuild_dir is not None and kernel.modules_dir is not None
    proc = subprocess.run([*HARNESS, "boot", "--platform", platform,
                           "--kernel", str(kernel.image), "--headers", str(kernel.kbuild_dir),
                           "--modules", str(kernel.modules_dir), "--out", str(tmp_path),
                           "--", "uname -r"], capture_output=True, text=True, timeout=180,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == kernel.release
