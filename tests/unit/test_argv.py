"""QEMU command lines against golden files; IOMMU_HARNESS_REGEN_GOLDEN=1 rewrites them."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from harness.platforms import PLATFORMS
from harness.prepare import TOPOLOGIES_DIR
from harness.qemu import LaunchSpec, build_argv, shell_quoted
from harness.topology import load_topology

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("IOMMU_HARNESS_REGEN_GOLDEN") == "1"


def spec(platform: str, topology: str, accel: str) -> LaunchSpec:
    p = PLATFORMS[platform]
    return LaunchSpec(
        platform=p, topology=load_topology(TOPOLOGIES_DIR / f"{topology}.toml", p),
        kernel=Path("/cache/vmlinux"), initrd=Path("/cache/image.cpio"),
        append=(*p.cmdline, "harness.sshkey=ssh-ed25519:KEY"), accel=accel,
        console_log=Path("/out/console.log"), qmp_socket=Path("/run/ih/qmp.sock"),
        control_socket=Path("/run/ih/ctl.sock"))


CASES = [(p, t, a) for p in sorted(PLATFORMS) for t in ("default", "mixed") for a in ("tcg", "kvm")]


@pytest.mark.parametrize(("platform", "topology", "accel"), CASES)
def test_argv_matches_golden(platform: str, topology: str, accel: str) -> None:
    argv = build_argv(spec(platform, topology, accel))
    text = "\n".join(argv) + "\n"
    path = GOLDEN / f"{platform}-{topology}-{accel}.argv"
    if REGEN:
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with IOMMU_HARNESS_REGEN_GOLDEN=1"
    assert text == path.read_text()


def test_iommu_device_precedes_every_pci_device() -> None:
    argv = build_argv(spec("x86_64-vtd", "mixed", "tcg"))
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    assert devices[0].startswith("intel-iommu,")


def test_shell_quoted_round_trips() -> None:
    argv = build_argv(spec("x86_64-vtd", "default", "tcg"))
    assert tuple(shlex.split(shell_quoted(argv))) == argv
