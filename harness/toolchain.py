"""The compiler a kernel's headers name, and where our modules are built with it.

Debian's headers name the compiler their kernel was built with in ``.kernelvariables``
(``CC = ... $(CROSS_COMPILE)gcc-16``), and their ``.config`` bakes in that compiler's options:
another gcc fails (gcc-12 rejects 7.2's ``-fmin-function-alignment=16``). A host that has the
compiler builds with it directly. Otherwise, for a kernel from a Debian suite, the harness makes
once a minimal Debian root of the suite whose toolchain built it (mmdebstrap, as root): gcc-N
native and the cross gcc-N for the other architecture, make, pahole (module BTF) and the
libraries kbuild's programs link, cached as ``<cache>/toolchains/<suite>-gcc-<N>/root``. The
build runs chrooted in it, inside a private mount namespace (``unshare --mount``) where the
kernel's unpacked tree and the module folder are bound under ``/mnt`` and the root itself is
read-only: nothing stays mounted, whatever happens to the harness.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import cache, hostcmd
from .debian import apt
from .errors import ConfigError, HostToolError, KernelError

GNU_TYPE = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}
CROSS_COMPILE = {arch: f"{gnu}-" for arch, gnu in GNU_TYPE.items()}
KBUILD_ARCH = {"x86_64": "x86", "aarch64": "arm64"}
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}

PRE_T64_SUITES = frozenset({"bookworm"})  # libelf1, libssl3: before trixie's t64 names
# What a module build never uses, left out of the root (about half its size): documentation,
# LTO (gcc kernels are not LTO-built) and the sanitizers' run-time libraries.
ROOT_EXCLUDES = (
    "/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
    "/usr/share/lintian/*", "/usr/bin/*lto-dump-*", "/usr/libexec/gcc*/*/*/lto1",
    "/usr/lib/gcc*/*/*/lto1",
    "/usr/lib/*/lib*san.so*", "/usr/lib/gcc*/*/*/lib*san*.a", "/usr/*-linux-gnu/lib/lib*san.so*",
)
# Sets up merged /usr itself where the suite has usr-is-merged (bookworm would otherwise pull in
# usrmerge and with it a whole perl: 60 MB).
MERGED_USR_HOOK = "/usr/share/mmdebstrap/hooks/maybe-merged-usr"
MNT_KERNEL, MNT_SRC = "/mnt/kernel", "/mnt/src"
# Run inside `unshare --mount`: the root read-only, a private /tmp, the kernel tree (read-only)
# and the module folder under /mnt, then the command chrooted with a clean environment.
IN_ROOT_SCRIPT = f"""\
root=$1 tree=$2 src=$3
shift 3
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount --bind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount -t tmpfs tmpfs "$root/tmp"
mount -t tmpfs tmpfs "$root/mnt"
mkdir "$root{MNT_KERNEL}" "$root{MNT_SRC}"
mount --bind "$tree" "$root{MNT_KERNEL}"
mount -o remount,bind,ro "$root{MNT_KERNEL}"
mount --bind "$src" "$root{MNT_SRC}"
exec chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/ LC_ALL=C "$@"
"""


@dataclass(frozen=True)
class Toolchain:
    """Where ``make -C <kbuild> M=<src>`` runs: on the host, or chrooted in a toolchain root."""

    compiler: str  # the program the kernel's kbuild will run, e.g. aarch64-linux-gnu-gcc-16
    make_args: tuple[str, ...] = ()  # ARCH= and CROSS_COMPILE= for a cross build
    root: Path | None = None  # a toolchain root; None: the host
    origin: str = "host"  # "host" or "toolchains/<suite>-gcc-<N>"

    @property
    def identity(self) -> str:
        """What a cache key of something built with it needs: the compiler and where it was."""
        return f"{self.origin}:{self.compiler}"

    def make(self, args: Sequence[str], *, kbuild_dir: Path, src_dir: Path, what: str,
             timeout: float) -> None:
        """``make -C kbuild_dir M=src_dir [ARCH=.. CROSS_COMPILE=..] args...``."""
        if self.root is None:
            hostcmd.run(["make", "-C", str(kbuild_dir), f"M={src_dir}", *self.make_args, *args],
                        what=what, timeout=timeout)
            return
        tree = kernel_tree(kbuild_dir)
        src = src_dir.resolve()
        inner = ["make", "-C", f"{MNT_KERNEL}/{kbuild_dir.resolve().relative_to(tree)}",
                 f"M={MNT_SRC}", *self.make_args, *args]
        try:
            hostcmd.run(in_root_argv(self.root, tree, src, inner, mount_propagation()),
                        what=what, timeout=timeout)
        except HostToolError as exc:  # name the files as the user sees them
            problem = exc.problem.replace(f"{MNT_SRC}/", f"{src}/")
            raise HostToolError(problem.replace(f"{MNT_KERNEL}/", f"{tree}/"),
                                f"it ran chrooted in {self.root}, {tree} at {MNT_KERNEL} and "
                                f"{src} at {MNT_SRC}: {shlex.join(inner)}") from exc


def toolchain_for(kbuild_dir: Path, target_arch: str, suite: str | None) -> Toolchain:
    """The toolchain to build modules for the kernel whose headers are ``kbuild_dir``.

    ``suite`` is the Debian suite the kernel came from (None: not a Debian package, so only the
    host can build for it). A toolchain root is made, once, when the host lacks the compiler.
    """
    host_arch = os.uname().machine
    variables = read_kernelvariables(kbuild_dir)
    compiler = kernel_compiler(variables, target_arch, host_arch)
    make_args = cross_make_args(target_arch, host_arch)
    if shutil.which(compiler):
        return Toolchain(compiler, make_args)
    package = compiler_package(compiler, host_arch)
    gcc = variables.compiler
    if suite is None or gcc is None or not re.fullmatch(r"gcc-\d+", gcc):
        raise ConfigError(f"the kernel's compiler {compiler} is missing on this host",
                          f"install it (apt-get install {package})")
    if os.geteuid() != 0:
        base = toolchain_suites(suite)[0][0]
        raise ConfigError(f"the kernel's compiler {compiler} ({suite}) is missing on this host",
                          f"install {package} from Debian {base}, or run as root: the harness "
                          f"then builds in a minimal Debian {base} root with {gcc}, made once")
    root, origin = toolchain_root(gcc, suite, host_arch)
    if not (root / "usr" / "bin" / compiler).exists():
        raise KernelError(f"the toolchain root {root} has no {compiler}",
                          f"remove {root.parent} so that it is made again")
    return Toolchain(compiler, make_args, root=root, origin=origin)


# ------------------------------------------------------------------------- pure: the compiler

@dataclass(frozen=True)
class KernelVariables:
    compiler: str | None  # CC's program without $(CROSS_COMPILE), e.g. "gcc-16"
    cross_compile: str | None  # an unconditional ``override CROSS_COMPILE = ...``


def parse_kernelvariables(text: str) -> KernelVariables:
    """Debian's ``.kernelvariables`` (a Makefile fragment). Assignments inside a conditional
    (6.1 overrides CROSS_COMPILE only when DEB_BUILD_ARCH differs from DEB_HOST_ARCH, which a
    module build does not set) are ignored."""
    depth = 0
    compiler = cross = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        word = line.split(maxsplit=1)[0] if line else ""
        if word in ("ifeq", "ifneq", "ifdef", "ifndef"):
            depth += 1
        elif word == "endif":
            depth = max(0, depth - 1)
        elif depth == 0 and (m := re.fullmatch(r"(?:override\s+)?(\w+)\s*[:?]?=\s*(.*)", line)):
            name, value = m.groups()
            if name == "CC" and value.split():
                program = value.split()[-1].removeprefix("$(CROSS_COMPILE)")
                compiler = None if "$" in program else program
            elif name == "CROSS_COMPILE" and "$" not in value:
                cross = value.strip() or None
    return KernelVariables(compiler, cross)


def read_kernelvariables(kbuild_dir: Path) -> KernelVariables:
    path = kbuild_dir / ".kernelvariables"
    return parse_kernelvariables(path.read_text()) if path.is_file() else KernelVariables(None,
                                                                                         None)


def kernel_compiler(variables: KernelVariables, target_arch: str, host_arch: str) -> str:
    """The program kbuild will run as CC: the headers' own prefix, else the one we pass for a
    cross build; the headers' gcc-N, else kbuild's default gcc."""
    prefix = variables.cross_compile
    if prefix is None:
        prefix = CROSS_COMPILE[target_arch] if target_arch != host_arch else ""
    return prefix + (variables.compiler or "gcc")


def cross_make_args(target_arch: str, host_arch: str) -> tuple[str, ...]:
    if target_arch == host_arch:
        return ()
    return (f"ARCH={KBUILD_ARCH[target_arch]}", f"CROSS_COMPILE={CROSS_COMPILE[target_arch]}")


def compiler_package(compiler: str, host_arch: str) -> str:
    """The Debian package with ``compiler`` for this host: gcc-16 for gcc-16 and
    x86_64-linux-gnu-gcc-16 on amd64, gcc-16-aarch64-linux-gnu for aarch64-linux-gnu-gcc-16."""
    for arch, gnu in GNU_TYPE.items():
        if compiler.startswith(f"{gnu}-"):
            name = compiler.removeprefix(f"{gnu}-")
            return name if arch == host_arch else f"{name}-{gnu.replace('_', '-')}"
    return compiler


# ---------------------------------------------------------------------- pure: the root's recipe

def toolchain_suites(suite: str) -> tuple[tuple[str, ...], ...]:
    """Where the toolchain that built a kernel of ``suite`` may be, most likely first: the base
    suite (bookworm for bookworm-security, trixie for trixie-backports, sid for experimental),
    then the base with the suite itself on top (for a compiler only that suite carries)."""
    name = "sid" if suite == "unstable" else suite
    if name in ("sid", "experimental"):
        return (("sid",),) if name == "sid" else (("sid",), ("sid", "experimental"))
    base = name.split("-", 1)[0]
    return ((base,),) if base == name else ((base,), (base, name))


def root_name(suites: Sequence[str], gcc: str) -> str:
    return f"{'+'.join(suites)}-{gcc}"


def root_compilers(gcc: str, host_arch: str) -> tuple[str, ...]:
    """gcc-N native and its cross build for the other architecture, as packages."""
    return (gcc, *(f"{gcc}-{gnu.replace('_', '-')}" for arch, gnu in GNU_TYPE.items()
                   if arch != host_arch))


def root_packages(gcc: str, host_arch: str, suites: Sequence[str]) -> tuple[str, ...]:
    """What a root holds beyond the essential set: the compilers (from the top suite when it is
    an overlay), make, pahole (module BTF) and the libraries of kbuild's programs (libelf:
    objtool, resolve_btfids; zlib: resolve_btfids; libssl: sign-file, extract-cert)."""
    overlay = f"/{suites[-1]}" if len(suites) > 1 else ""
    libs = ("libelf1", "libssl3") if suites[0] in PRE_T64_SUITES else ("libelf1t64",
                                                                       "libssl3t64")
    return (*(c + overlay for c in root_compilers(gcc, host_arch)), "make", "dwarves", *libs,
            "zlib1g")


def parse_madison(text: str, debian_arch: str) -> dict[str, frozenset[str]]:
    """``apt-cache madison`` lines → the suites that carry each package for ``debian_arch``."""
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 3:
            continue
        words = fields[2].split()
        if len(words) >= 3 and words[2] in (debian_arch, "all"):
            found.setdefault(fields[0], set()).add(words[1].split("/", 1)[0])
    return {name: frozenset(suites) for name, suites in found.items()}


def pick_suites(candidates: Iterable[tuple[str, ...]], carried: Mapping[str, frozenset[str]],
                packages: Iterable[str]) -> tuple[str, ...] | None:
    """The first candidate whose suites together carry every package."""
    wanted = tuple(packages)
    for suites in candidates:
        if all(carried.get(p, frozenset()) & set(suites) for p in wanted):
            return suites
    return None


def root_apt_options() -> tuple[str, ...]:
    """The apt settings of a root's making: those of the harness's own apt configuration."""
    return tuple(f'{key} "{value}"' for key, value in apt.ACQUIRE_OPTIONS.items())


def mirror_line(suite: str) -> str:
    return f"deb {apt.suite_mirror(suite)} {suite} main"


def mmdebstrap_argv(target: Path, suites: Sequence[str], packages: Sequence[str],
                    apt_options: Sequence[str] = (), propagation: str = "private") -> list[str]:
    """mmdebstrap of a small root: the essential set plus ``packages``, no recommends, no apt,
    no documentation, merged /usr; run in a private mount namespace so that its /proc, /sys and
    /dev mounts die with it (``propagation``: see :func:`propagation_for`)."""
    return ["unshare", "--mount", "--propagation", propagation,
            "mmdebstrap", "--mode=root", "--format=directory", "--variant=essential",
            f"--keyring={apt.KEYRING}", f"--hook-dir={MERGED_USR_HOOK}",
            '--aptopt=Acquire::Languages "none"',
            *(f"--aptopt={o}" for o in apt_options),
            *(f"--dpkgopt=path-exclude={p}" for p in ROOT_EXCLUDES),
            f"--include={','.join(packages)}",
            suites[0], str(target), *(mirror_line(s) for s in suites)]


def kernel_tree(kbuild_dir: Path) -> Path:
    """The folder that holds the headers, the ``-common`` headers beside them and the kbuild
    programs their ``scripts`` link points at (``<unpacked>/usr`` for Debian's packages)."""
    kbuild = kbuild_dir.resolve()
    scripts = (kbuild_dir / "scripts").resolve()
    return Path(os.path.commonpath([kbuild.parent, scripts]))


def in_root_argv(root: Path, tree: Path, src: Path, command: Sequence[str],
                 propagation: str = "private") -> list[str]:
    """``command`` chrooted in ``root`` with ``tree`` at /mnt/kernel and ``src`` at /mnt/src."""
    return ["unshare", "--mount", "--propagation", propagation, "sh", "-euc", IN_ROOT_SCRIPT,
            "in-toolchain-root", str(root), str(tree), str(src), *command]


def propagation_for(mountinfo: str) -> str:
    """How ``unshare --mount`` keeps our mounts to itself: ``private`` makes every mount private
    from "/" down, which needs "/" to be a mount point we can see. A harness running in a
    chroot (a Debian 13 root made with debootstrap, say) sees none there, and unshare refuses
    ("cannot change root filesystem propagation"); there the mounts keep the propagation they
    have (pure: the text of /proc/self/mountinfo)."""
    roots = [line for line in mountinfo.splitlines() if len(line.split()) > 4
             and line.split()[4] == "/"]
    return "private" if roots else "unchanged"


def mount_propagation() -> str:
    try:
        return propagation_for(Path("/proc/self/mountinfo").read_text())
    except OSError:
        return "private"


# --------------------------------------------------------------------------------- the root

def toolchain_root(gcc: str, suite: str, host_arch: str) -> tuple[Path, str]:
    """The toolchain root with ``gcc`` for kernels of ``suite`` (made on first use) and its
    origin, ``toolchains/<name>``."""
    candidates = toolchain_suites(suite)
    top = cache.cache_root() / "toolchains"
    for suites in candidates:
        entry = top / root_name(suites, gcc)
        if (entry / "root").is_dir():
            return entry / "root", f"toolchains/{entry.name}"
    compilers = root_compilers(gcc, host_arch)
    chosen = pick_suites(candidates, _carried(compilers, DEBIAN_ARCH[host_arch]), compilers)
    if chosen is None:
        tried = " or ".join("+".join(s) for s in candidates)
        raise KernelError(f"no Debian suite of {tried} carries {' and '.join(compilers)}",
                          f"install {gcc} on the host by hand")
    entry = top / root_name(chosen, gcc)
    top.mkdir(parents=True, exist_ok=True)
    cache.ensure_dir(entry, lambda tmp: _make_root(tmp, chosen, gcc, host_arch))
    return entry / "root", f"toolchains/{entry.name}"


def _carried(packages: Sequence[str], debian_arch: str) -> dict[str, frozenset[str]]:
    """Which suites carry ``packages``, from the harness's own apt lists (every suite)."""
    root = apt.refresh()
    out = hostcmd.run(["apt-cache", *apt.apt_options(root), "madison", *packages],
                      what="apt-cache madison", timeout=120)
    return parse_madison(out, debian_arch)


def _make_root(entry: Path, suites: Sequence[str], gcc: str, host_arch: str) -> None:
    root = entry / "root"
    packages = root_packages(gcc, host_arch, suites)
    apt.notice(f"making a toolchain root of {'+'.join(suites)} with {gcc} (once; about 30 s and "
            f"250 MB)")
    started = time.monotonic()
    hostcmd.run(mmdebstrap_argv(root, suites, packages, root_apt_options(),
                                mount_propagation()),
                what=f"making the {gcc} toolchain root", timeout=1800)
    seconds = time.monotonic() - started
    versions = {}
    for gnu in GNU_TYPE.values():
        program = f"{gnu}-{gcc}"
        out = hostcmd.run(["chroot", str(root), program, "--version"],
                          what=f"{program} in the toolchain root")
        versions[program] = out.splitlines()[0] if out else ""
    size = tree_bytes(root)
    (entry / "toolchain.json").write_text(json.dumps({
        "suites": list(suites), "packages": list(packages), "compilers": versions,
        "seconds": round(seconds, 1), "bytes": size}, indent=1) + "\n")
    apt.notice(f"made the toolchain root {'+'.join(suites)}-{gcc} in {seconds:.0f}s "
            f"({size / 1e6:.0f} MB)")


def tree_bytes(path: Path) -> int:
    """Disk use of a tree, hard links once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            st = os.lstat(os.path.join(folder, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total
