"""Kernel selection and the configuration check (no downloads)."""

from __future__ import annotations

import pytest

from harness.kconfig import parse_config
from harness.kernel import config_problem
from harness.platforms import X86_64_VTD
from tests.conftest import DATA

REAL = parse_config((DATA / "config-6.1.0-56-amd64.excerpt").read_text())


def test_debian_61_config_fits_x86_vtd() -> None:
    assert config_problem(REAL, X86_64_VTD, has_modules=True) == ""


@pytest.mark.parametrize(("drop", "needle"), [
    ("CONFIG_INTEL_IOMMU", "needs CONFIG_INTEL_IOMMU=y"),
    ("CONFIG_IRQ_REMAP", "needs CONFIG_IRQ_REMAP=y"),
    ("CONFIG_VIRTIO_CONSOLE", "needs CONFIG_VIRTIO_CONSOLE=y or =m"),
])
def test_missing_options_are_named(drop: str, needle: str) -> None:
    config = {k: v for k, v in REAL.items() if k != drop}
    assert needle in config_problem(config, X86_64_VTD, has_modules=True)


def test_a_modular_iommu_driver_is_refused() -> None:
    config = dict(REAL, CONFIG_INTEL_IOMMU="m")
    assert "CONFIG_INTEL_IOMMU=y" in config_problem(config, X86_64_VTD, has_modules=True)


def test_modules_needed_but_none_given() -> None:
    problem = config_problem(REAL, X86_64_VTD, has_modules=False)
    assert "--modules" in problem and "CONFIG_VIRTIO_PCI" in problem


def test_builtin_virtio_needs_no_modules() -> None:
    config = dict(REAL, CONFIG_VIRTIO_PCI="y", CONFIG_VIRTIO_CONSOLE="y", CONFIG_VIRTIO_NET="y")
    assert config_problem(config, X86_64_VTD, has_modules=False) == ""


def test_parse_config_ignores_comments_and_unset() -> None:
    cfg = parse_config('# CONFIG_FOO is not set\nCONFIG_BAR=y\nCONFIG_S="a b"\n\n')
    assert cfg == {"CONFIG_BAR": "y", "CONFIG_S": "a b"}
