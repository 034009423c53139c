"""ELF checks on real modules built by the harness (tests/data, stripped of debug info), and the
module cache (a fake toolchain)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from harness import cache, modules
from harness.artifact import KernelArtifact
from harness.model.core import OPERATION_ARGS
from harness.modules import (
    GUEST_MODULES_DIR,
    ModuleCheckError,
    ModuleInfo,
    build_modules,
    module_problem,
    parse_modinfo,
    parse_symvers,
    read_module,
)
from harness.platforms import X86_64_VTD
from harness.scenario import SHELL_OPS, VFIO_OPS
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


class FakeToolchain:
    """Builds by copying a real module into the build folder; counts its builds."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.builds: list[tuple[list[str], Path, Path]] = []

    def make(self, args: list[str], *, kbuild_dir: Path, src_dir: Path, what: str,
             timeout: float) -> None:
        self.builds.append((args, kbuild_dir, src_dir))
        assert not (src_dir / "tools").exists()  # the guest tools are not kbuild's business
        shutil.copy(DATA / "ih_smoke-6.1.0-56-amd64.ko", src_dir / "ih_smoke.ko")


def test_build_modules_keys_its_cache_by_toolchain(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.ENV_CACHE, str(tmp_path / "cache"))
    kbuild = tmp_path / "headers"
    kbuild.mkdir()
    shutil.copy(DATA / "Module.symvers-6.1.0-56-amd64.excerpt", kbuild / "Module.symvers")
    source = tmp_path / "guest_modules"
    (source / "tools").mkdir(parents=True)
    (source / "Kbuild").write_text("obj-m += ih_smoke.o\n")
    (source / "ih_smoke.c").write_text("/* */\n")
    (source / "tools" / "t.c").write_text("int main(void) { return 0; }\n")
    kernel = KernelArtifact(spec="debian:6.1", release="6.1.0-56-amd64", debian_arch="amd64",
                            image=kbuild, boot_image=kbuild, config_path=kbuild / ".config",
                            modules_dir=None, kbuild_dir=kbuild, suite="bookworm")
    chains = {name: FakeToolchain(name)
              for name in ("host:gcc-12", "toolchains/bookworm-gcc-12:gcc-12")}
    asked: list[tuple[Path, str, str | None]] = []
    current = ["host:gcc-12"]

    def toolchain_for(kbuild_dir: Path, arch: str, suite: str | None) -> FakeToolchain:
        asked.append((kbuild_dir, arch, suite))
        return chains[current[0]]

    monkeypatch.setattr(modules, "toolchain_for", toolchain_for)
    first = build_modules(kernel, X86_64_VTD, source)
    assert [p.name for p in first] == ["ih_smoke.ko"]
    assert asked == [(kbuild, "x86_64", "bookworm")]
    assert chains["host:gcc-12"].builds[0][0] == ["-s", "modules"]
    assert build_modules(kernel, X86_64_VTD, source) == first  # cached
    assert len(chains["host:gcc-12"].builds) == 1
    current[0] = "toolchains/bookworm-gcc-12:gcc-12"  # another compiler: another entry
    other = build_modules(kernel, X86_64_VTD, source)
    assert other != first and len(chains[current[0]].builds) == 1


def test_the_modules_operations_are_the_models() -> None:
    # ih_attach.c's table of {name, arity, handler} and the model's operation table cannot
    # drift: the same names, each taking as many arguments as the model's handler (set_type is
    # a sysfs write from the guest's shell, not a module operation; state and members read).
    source = (GUEST_MODULES_DIR / "ih_attach.c").read_text()
    table = source[source.index("static const struct ih_op ih_ops[] = {"):]
    table = table[:table.index("};")]
    module = {name: int(arity) for name, arity, handler in
              re.findall(r'\{ "(\w+)", (\d), do_(\w+) \}', table) if name == handler}
    assert len(module) == table.count("{ \"")  # every entry parsed, each with its own handler
    model = {name: len(args) for name, args in OPERATION_ARGS.items()
             if name not in SHELL_OPS + VFIO_OPS}
    assert {k: v for k, v in module.items() if k not in ("state", "members")} == model
    assert module["state"] == module["members"] == 1


def test_the_vfio_helpers_commands_are_the_models() -> None:
    # ih-vfio.c's commands and the model's vfio_* operations cannot drift: the same names,
    # each taking the model's arguments (a group command takes the group the step finds for
    # the device the model names; "device" takes both).
    source = (GUEST_MODULES_DIR / "tools" / "ih-vfio.c").read_text()
    helper = {name: int(n) - 1 for name, n in
              re.findall(r'!strcmp\(op, "(\w+)"\) && n >= (\d)\)', source)}
    model = {name.removeprefix("vfio_"): len(OPERATION_ARGS[name]) for name in VFIO_OPS}
    model["device"] += 1  # the group, then the device
    assert helper == model
