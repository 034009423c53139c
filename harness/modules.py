"""Building guest_modules/ with the target kernel's own kbuild, and checking what was built.

Modules are built natively or, for arm64, with the cross compiler against Debian's arm64
headers (whose scripts/ are the host's own linux-kbuild package), with the compiler the
kernel's headers name: the host's, or a toolchain root's (harness.toolchain). They are cached by
(source hash, kernel release, arch, toolchain). Before a module goes into a guest its ELF is
checked with pyelftools: the machine, the vermagic against the kernel release, and every symbol
it needs against the kernel's Module.symvers.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from . import cache, hostcmd
from .errors import ConfigError, KernelError
from .kernel import KernelArtifact
from .platforms import Platform
from .toolchain import CROSS_COMPILE, toolchain_for

GUEST_MODULES_DIR = Path(__file__).resolve().parent.parent / "guest_modules"
ELF_MACHINE = {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}


class ModuleCheckError(KernelError):
    """A built module does not fit the kernel it is meant for."""


@dataclass(frozen=True)
class ModuleInfo:
    name: str
    machine: str  # pyelftools' e_machine name, e.g. EM_X86_64
    vermagic: str
    undefined: frozenset[str]
    defined: frozenset[str]


def read_module(path: Path) -> ModuleInfo:
    with path.open("rb") as f:
        elf = ELFFile(f)
        modinfo = elf.get_section_by_name(".modinfo")
        if modinfo is None:
            raise ModuleCheckError(f"{path.name} has no .modinfo section: not a kernel module",
                                   "rebuild it with the kernel's kbuild")
        fields = parse_modinfo(modinfo.data())
        undefined, defined = set(), set()
        symtab = elf.get_section_by_name(".symtab")
        if isinstance(symtab, SymbolTableSection):
            for sym in symtab.iter_symbols():
                if not sym.name or sym["st_info"]["type"] == "STT_SECTION":
                    continue
                if sym["st_shndx"] == "SHN_UNDEF":
                    undefined.add(sym.name)
                elif sym["st_info"]["bind"] == "STB_GLOBAL":
                    defined.add(sym.name)
        return ModuleInfo(name=fields.get("name", path.stem), machine=str(elf["e_machine"]),
                          vermagic=fields.get("vermagic", ""), undefined=frozenset(undefined),
                          defined=frozenset(defined))


def parse_modinfo(data: bytes) -> dict[str, str]:
    """``.modinfo`` is NUL-separated ``key=value`` strings (include/linux/moduleparam.h)."""
    fields: dict[str, str] = {}
    for raw in data.split(b"\0"):
        key, sep, value = raw.decode(errors="replace").partition("=")
        if sep:
            fields.setdefault(key, value)
    return fields


def parse_symvers(text: str) -> frozenset[str]:
    """Exported symbol names from Module.symvers (``crc<TAB>symbol<TAB>module<TAB>export``)."""
    names = set()
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 4:
            names.add(parts[1])
    return frozenset(names)


def module_problem(info: ModuleInfo, release: str, arch: str, exported: frozenset[str],
                   provided: Iterable[str] = ()) -> str:
    """Why a module cannot load into this kernel, or empty (pure)."""
    want = ELF_MACHINE[arch]
    if info.machine != want:
        return f"{info.name}.ko is built for {info.machine}, the kernel is {want}"
    built_for = info.vermagic.split(" ", 1)[0]
    if built_for != release:
        return f"{info.name}.ko is built for kernel {built_for or '(no vermagic)'}, not {release}"
    missing = sorted(info.undefined - exported - set(provided))
    if missing:
        return f"{info.name}.ko needs symbols {release} does not export: {', '.join(missing[:8])}"
    return ""


def check_modules(paths: Iterable[Path], kernel: KernelArtifact, platform: Platform) -> None:
    infos = [read_module(p) for p in paths]
    exported = _exported(kernel)
    provided = {s for i in infos for s in i.defined}
    for info in infos:
        problem = module_problem(info, kernel.release, platform.arch, exported, provided)
        if problem:
            raise ModuleCheckError(problem, "rebuild the module against this kernel's headers")


def _exported(kernel: KernelArtifact) -> frozenset[str]:
    if kernel.kbuild_dir is None or not (kernel.kbuild_dir / "Module.symvers").is_file():
        raise ConfigError(f"kernel {kernel.release} has no Module.symvers",
                          "pass --headers with a built kernel tree")
    return parse_symvers((kernel.kbuild_dir / "Module.symvers").read_text())


def _source_files(source: Path) -> list[Path]:
    return sorted(p for p in source.rglob("*")
                  if p.is_file() and "tools" not in p.relative_to(source).parts
                  and (p.suffix in {".c", ".h", ".S"} or p.name in {"Kbuild", "Makefile"}))


def build_modules(kernel: KernelArtifact, platform: Platform,
                  source: Path = GUEST_MODULES_DIR) -> tuple[Path, ...]:
    """Build every module under ``source`` for ``kernel``; return the checked .ko files."""
    if kernel.kbuild_dir is None:
        raise ConfigError(f"kernel {kernel.release} has no headers to build modules with",
                          "pass --headers DIR")
    kbuild_dir = kernel.kbuild_dir
    toolchain = toolchain_for(kbuild_dir, platform.arch, kernel.suite)
    files = _source_files(source)
    key = cache.digest([kernel.release, kernel.build or "", platform.arch, toolchain.identity,
                        *(f"{p.relative_to(source)}\0{p.read_text()}" for p in files)])
    entry = cache.cache_root() / "modules" / f"{kernel.release}-{key}"
    entry.parent.mkdir(parents=True, exist_ok=True)

    def build(tmp: Path) -> None:
        src = tmp / "src"
        shutil.copytree(source, src, ignore=shutil.ignore_patterns("tools"))
        toolchain.make(["-s", "modules"], kbuild_dir=kbuild_dir, src_dir=src,
                       what=f"building guest modules for {kernel.release} with "
                            f"{toolchain.identity}", timeout=600)
        for ko in src.rglob("*.ko"):
            shutil.move(str(ko), tmp / ko.name)
        shutil.rmtree(src)

    cache.ensure_dir(entry, build)
    built = tuple(sorted(entry.glob("*.ko")))
    check_modules(built, kernel, platform)
    return built


TOOLS_DIR = GUEST_MODULES_DIR / "tools"


def build_tools(platform: Platform, source: Path = TOOLS_DIR) -> tuple[Path, ...]:
    """Guest user-space helpers (``tools/*.c``): static binaries for the guest's architecture,
    built with the host compiler or the cross compiler, cached by (source hash, arch)."""
    sources = sorted(source.glob("*.c"))
    # Every file a helper includes: its own headers and the modules' (edu.h).
    inputs = [*sources, *sorted(source.glob("*.h")), *sorted(source.parent.glob("*.h"))]
    key = cache.digest([platform.arch, *(f"{p.name}\0{p.read_text()}" for p in inputs)])
    entry = cache.cache_root() / "tools" / f"{platform.arch}-{key}"
    entry.parent.mkdir(parents=True, exist_ok=True)
    native = platform.arch == os.uname().machine
    compiler = "gcc" if native else f"{CROSS_COMPILE[platform.arch]}gcc"

    def build(tmp: Path) -> None:
        for src in sources:
            hostcmd.run([compiler, "-static", "-O2", "-Wall", "-Werror", "-o",
                         str(tmp / src.stem), str(src)], what=f"building guest tool {src.name}")

    cache.ensure_dir(entry, build)
    return tuple(sorted(p for p in entry.iterdir() if p.is_file()))
