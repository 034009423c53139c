"""Kernel configuration fragments (harness/kfragments.py and images/kconfig/): parsing, merge
order, the dropped-option check."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.kconfig import parse_config
from harness.kfragments import (
    FRAGMENTS_DIR,
    OPTIONAL,
    dropped,
    dropped_line,
    fragment_files,
    merged,
    parse_fragment,
)


def test_a_fragment_reads_values_and_not_set_lines() -> None:
    text = "# a comment\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=\"x y\"\n"
    assert parse_fragment(text) == {"CONFIG_A": "y", "CONFIG_B": "m", "CONFIG_C": "n",
                                    "CONFIG_D": "x y"}


def test_fragments_merge_in_order_base_arch_then_extras() -> None:
    files = fragment_files("amd64", ["iommufd-test", "debug", "iommufd-test"])
    assert [f.stem for f in files] == ["base", "x86_64", "iommufd-test", "debug"]
    assert all(f.is_file() for f in files)
    asked = merged(parse_fragment(f.read_text()) for f in files)
    assert asked["CONFIG_IOMMUFD"] == "y"  # iommufd-test wins over base's module
    assert asked["CONFIG_INTEL_IOMMU"] == "y" and "CONFIG_ARM_SMMU_V3" not in asked
    arm = merged(parse_fragment(f.read_text()) for f in fragment_files("arm64"))
    assert arm["CONFIG_ARM_SMMU_V3"] == "y" and arm["CONFIG_IOMMUFD"] == "m"


def test_an_optional_fragment_brings_its_architectures_part() -> None:
    x86 = [f.name for f in fragment_files("x86_64", ["vfio-test", "debug"])]
    assert x86 == ["base.config", "x86_64.config", "vfio-test.config",
                   "vfio-test.x86_64.config", "debug.config"]
    arm = [f.name for f in fragment_files("arm64", ["vfio-test"])]
    assert arm == ["base.config", "arm64.config", "vfio-test.config"]
    asked = merged(parse_fragment(f.read_text()) for f in fragment_files("x86_64",
                                                                        ["vfio-test"]))
    assert asked["CONFIG_INTEL_IOMMU_DEBUGFS"] == "y" and asked["CONFIG_IOMMUFD"] == "y"


def test_every_shipped_fragment_is_known_and_parses() -> None:
    shipped = {p.stem for p in FRAGMENTS_DIR.glob("*.config")}
    per_arch = {s for s in shipped if "." in s}
    assert shipped - per_arch == {"base", "x86_64", "arm64", *OPTIONAL}
    assert all(s.split(".")[0] in OPTIONAL and s.split(".")[1] in ("x86_64", "arm64")
               for s in per_arch)
    for path in FRAGMENTS_DIR.glob("*.config"):
        options = parse_fragment(path.read_text())
        assert options, path
        assert all(k.startswith("CONFIG_") for k in options)


def test_the_base_has_what_the_platform_checks_require() -> None:
    # What harness/platforms.py refuses a kernel without must come from the fragments.
    x86 = merged(parse_fragment(f.read_text()) for f in fragment_files("x86_64"))
    for option in ("CONFIG_PCI", "CONFIG_IOMMU_SUPPORT", "CONFIG_INTEL_IOMMU",
                   "CONFIG_IRQ_REMAP", "CONFIG_SERIAL_8250_CONSOLE", "CONFIG_BLK_DEV_INITRD",
                   "CONFIG_DEVTMPFS", "CONFIG_VIRTIO_PCI", "CONFIG_VIRTIO_CONSOLE",
                   "CONFIG_KALLSYMS", "CONFIG_PVH"):
        assert x86.get(option) == "y", option
    assert x86["CONFIG_PCI_STUB"] == "m"


def test_unknown_names_are_usage_errors_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown --kconfig kasan.*debug, fault-injection"):
        fragment_files("x86_64", ["kasan"])
    with pytest.raises(ConfigError, match="architecture 'riscv'"):
        fragment_files("riscv")


def test_dropped_names_what_the_tree_did_not_keep() -> None:
    asked = {"CONFIG_A": "y", "CONFIG_B": "m", "CONFIG_C": "y", "CONFIG_D": "n",
             "CONFIG_E": "y", "CONFIG_F": "100"}
    final = parse_config("CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=m\nCONFIG_F=50\n")
    # B: a module asked for and built in is there; D: "n" is met by its absence.
    assert dropped(asked, final) == ["CONFIG_C=y (got m)", "CONFIG_E=y (got unset)",
                                     "CONFIG_F=100 (got 50)"]
    assert dropped({"CONFIG_D": "n"}, {"CONFIG_D": "y"}) == ["CONFIG_D=n (got y)"]
    line = dropped_line("/src/linux", dropped(asked, final))
    assert line.startswith("the kernel tree /src/linux dropped 3 requested options: ")
    assert "\n" not in line
    assert dropped_line("t", ["CONFIG_X=y (got unset)"]).count("option:") == 1


def test_fragments_are_found_from_any_working_directory(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert all(p.is_file() for p in fragment_files("arm64", ["fault-injection"]))
