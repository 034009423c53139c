"""ELF checks on real modules built by the harness (tests/data, stripped of debug info)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.modules import (
    ModuleCheckError,
    ModuleInfo,
    module_problem,
    parse_modinfo,
    parse_symvers,
    read_module,
)
from tests.conftest import DATA

X86 = read_module(DATA / "ih_smoke-6.1.0-56-amd64.ko")
ARM = read_module(DATA / "ih_smoke-6.1.0-56-arm64.ko")
SYMS = {arch: parse_symvers((DATA / f"Module.symvers-6.1.0-56-{arch}.excerpt").read_text())
        for arch in ("amd64", "arm64")}


@pytest.mark.parametrize(("info", "release", "arch", "syms"), [
    (X86, "6.1.0-56-amd64", "x86_64", "amd64"),
    (ARM, "6.1.0-56-arm64", "aarch64", "arm64"),
])
def test_a_module_fits_the_kernel_it_was_built_for(info: ModuleInfo, release: str, arch: str,
                                                   syms: str) -> None:
    assert info.name == "ih_smoke"
    assert "iommu_group_get" in info.undefined
    assert module_problem(info, release, arch, SYMS[syms]) == ""


def test_built_for_another_release() -> None:
    problem = module_problem(X86, "6.12.117+deb12-amd64", "x86_64", SYMS["amd64"])
    assert problem == "ih_smoke.ko is built for kernel 6.1.0-56-amd64, not 6.12.117+deb12-amd64"


def test_built_for_another_architecture() -> None:
    problem = module_problem(ARM, "6.1.0-56-arm64", "x86_64", SYMS["arm64"])
    assert problem == "ih_smoke.ko is built for EM_AARCH64, the kernel is EM_X86_64"


def test_a_symbol_the_kernel_does_not_export() -> None:
    problem = module_problem(X86, "6.1.0-56-amd64", "x86_64", SYMS["amd64"] - {"iommu_group_get"})
    assert problem.endswith("does not export: iommu_group_get")
    # a symbol another module of the same build provides is fine
    assert module_problem(X86, "6.1.0-56-amd64", "x86_64", SYMS["amd64"] - {"iommu_group_get"},
                          provided={"iommu_group_get"}) == ""


def test_modinfo_and_symvers_parsers() -> None:
    assert parse_modinfo(b"license=GPL\0vermagic=6.1 SMP\0\0name=x\0") == {
        "license": "GPL", "vermagic": "6.1 SMP", "name": "x"}
    assert parse_symvers("0x1\tfoo\tvmlinux\tEXPORT_SYMBOL\t\nbad line\n") == {"foo"}


def test_not_a_module(tmp_path: Path) -> None:
    (tmp_path / "x.ko").write_bytes((DATA / "ih_smoke-6.1.0-56-amd64.ko").read_bytes()
                                    .replace(b".modinfo", b".notinfo"))
    with pytest.raises(ModuleCheckError, match="not a kernel module"):
        read_module(tmp_path / "x.ko")
