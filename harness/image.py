"""The guest image: an uncompressed initramfs (busybox, dropbear, the kernel modules the guest
needs with their modules.dep closure, and the init from images/), cached by content hash.

Uncompressed on purpose: under TCG the guest's own decompression is the slow part of a boot.
"""

from __future__ import annotations

import lzma
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from . import cache, cpio, hostcmd
from .debian import apt
from .debian.layout import usr_merge
from .errors import KernelError
from .kernel import KernelArtifact
from .moddep import ModuleNotFound, load_order, module_name, parse_modules_dep
from .platforms import OPTIONAL_MODULES, Platform

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"
MULTIARCH = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}


@dataclass(frozen=True)
class GuestImage:
    path: Path
    digest: str
    host_key: str  # the guest's SSH host key, "ssh-ed25519 AAAA..."


@dataclass(frozen=True)
class Userland:
    """Where the guest's user-space binaries come from: a sysroot of the guest's architecture."""

    sysroot: Path
    busybox: Path  # inside sysroot
    dropbear: Path  # inside sysroot
    triplet: str


# The guest's user space for a foreign architecture: these Debian packages, unpacked.
FOREIGN_PACKAGES = ("busybox-static", "dropbear-bin", "libc6", "libcrypt1", "libgmp10",
                    "libtomcrypt1", "libtommath1", "zlib1g")


# ...from this suite, whatever the host runs (the harness's own apt configuration).
FOREIGN_SUITE = "bookworm"


def guest_userland(platform: Platform) -> Userland:
    """The host's own binaries when the guest has the host's architecture, else a sysroot of
    Debian packages for the guest's (fetched once)."""
    if platform.arch == os.uname().machine:
        return _userland_at(Path("/"), platform)
    entry = cache.cache_root() / "userland" / f"{platform.debian_arch}-{FOREIGN_SUITE}-v2"
    entry.parent.mkdir(parents=True, exist_ok=True)

    def fetch(tmp: Path) -> None:
        debs = tmp / "debs"
        debs.mkdir()
        apt.download_packages([f"{p}:{platform.debian_arch}/{FOREIGN_SUITE}"
                               for p in FOREIGN_PACKAGES], debs,
                              f"the {platform.debian_arch} guest user space")
        for deb in sorted(debs.glob("*.deb")):
            hostcmd.run(["dpkg", "-x", str(deb), str(tmp / "root")], what=f"dpkg -x {deb.name}")
        usr_merge(tmp / "root")
        shutil.rmtree(debs)

    cache.ensure_dir(entry, fetch)
    return _userland_at(entry / "root", platform)


def _userland_at(root: Path, platform: Platform) -> Userland:
    """Busybox and dropbear where Debian puts them: /bin and /usr/sbin, or (usr-merged
    packages on a host that is not usr-merged) /usr/bin and /usr/sbin."""
    found = {}
    for name, places in (("busybox", ("bin", "usr/bin")), ("dropbear", ("usr/sbin", "sbin"))):
        path = next((root / p / name for p in places if (root / p / name).exists()), None)
        if path is None:
            where = root if root != Path("/") else "this host"
            raise KernelError(f"{name} for the {platform.debian_arch} guest is missing in {where}",
                              "run 'make deps' (it installs busybox-static and dropbear-bin)")
        found[name] = path
    return Userland(root, found["busybox"], found["dropbear"], MULTIARCH[platform.arch])


# ---------------------------------------------------------------------------------- ELF closure

def _elf_deps(path: Path) -> tuple[str | None, list[str]]:
    with path.open("rb") as f:
        elf = ELFFile(f)
        interp = None
        for seg in elf.iter_segments():
            if isinstance(seg, InterpSegment):
                interp = str(seg.get_interp_name())
        needed = [str(getattr(t, "needed", "")) for s in elf.iter_sections()
                  if isinstance(s, DynamicSection)
                  for t in s.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
    return interp, needed


def library_closure(binary: Path, userland: Userland) -> dict[str, Path]:
    """Every shared object ``binary`` needs → its file in the sysroot (archive path → source).

    Libraries go to /lib (the harness runs them with LD_LIBRARY_PATH=/lib); the interpreter to
    the absolute path its PT_INTERP names.
    """
    root = userland.sysroot
    search = [f"lib/{userland.triplet}", f"usr/lib/{userland.triplet}", "lib64", "lib"]
    found: dict[str, Path] = {}
    pending = [binary]
    while pending:
        interp, needed = _elf_deps(pending.pop())
        if interp and interp.lstrip("/") not in found:
            found[interp.lstrip("/")] = in_sysroot(root, interp)
        for soname in needed:
            if f"lib/{soname}" in found:
                continue
            src = next((in_sysroot(root, f"{d}/{soname}") for d in search
                        if (root / d / soname).is_symlink() or (root / d / soname).exists()),
                       None)
            if src is None or not src.exists():
                raise KernelError(f"{binary.name} needs {soname}, not found in {root}",
                                  "run 'make deps'")
            found[f"lib/{soname}"] = src
            pending.append(src)
    return found


def in_sysroot(root: Path, path: str, depth: int = 0) -> Path:
    """Resolve ``path`` inside ``root``, following symlinks (absolute ones relative to root)."""
    if depth > 40:
        raise KernelError(f"symlink loop at {path} in {root}")
    parts = [p for p in path.split("/") if p]
    current = root
    for i, part in enumerate(parts):
        candidate = current / part
        if candidate.is_symlink():
            target = os.readlink(candidate)
            base = "/" if target.startswith("/") else str(current.relative_to(root))
            rest = "/".join(parts[i + 1:])
            return in_sysroot(root, f"{base}/{target}/{rest}".replace("//", "/"), depth + 1)
        current = candidate
    return current


# ---------------------------------------------------------------------------------- modules

def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".zst":
        return hostcmd.run_bytes(["zstd", "-dc", str(path)], what="zstd")
    return data


def module_entries(kernel: KernelArtifact, names: Sequence[str],
                   optional: Sequence[str] = ()) -> tuple[list[cpio.Entry], str]:
    """Archive entries for ``names`` and their dependencies, plus the insmod list (in order);
    ``optional`` ones too where the kernel has them."""
    if not names:
        return [], ""
    if kernel.modules_dir is None:
        raise KernelError(f"kernel {kernel.release} has no modules directory but the guest "
                          f"needs {', '.join(names)}", "pass --modules DIR")
    deps = parse_modules_dep((kernel.modules_dir / "modules.dep").read_text())
    builtin_file = kernel.modules_dir / "modules.builtin"
    builtin = builtin_file.read_text().split() if builtin_file.exists() else []
    known = {module_name(p) for p in [*deps, *builtin]}
    names = [*names, *(n for n in optional if n.replace("-", "_") in known)]
    try:
        order = load_order(deps, names, builtin)
    except ModuleNotFound as exc:
        raise KernelError(f"module {exc.args[0]} is neither built into {kernel.release} nor in "
                          "its modules.dep", "rebuild the kernel with it, or pick another kernel"
                          ) from exc
    entries, lines = [], []
    for rel in order:
        target = f"lib/modules/{kernel.release}/{rel.removesuffix('.xz').removesuffix('.zst')}"
        entries.append(cpio.file(target, _read_module(kernel.modules_dir / rel)))
        lines.append("/" + target)
    return entries, "\n".join(lines) + "\n"


def guest_module_entries(kernel: KernelArtifact, built: Sequence[Path],
                        tools: Sequence[Path] = ()) -> list[cpio.Entry]:
    """Our own modules, at /lib/modules/<release>/extra/ (see Guest.load_module), and our
    user-space tools in /bin."""
    return [*(cpio.file(f"lib/modules/{kernel.release}/extra/{ko.name}", ko.read_bytes())
              for ko in built),
            *(cpio.file(f"bin/{tool.name}", tool.read_bytes(), 0o755) for tool in tools)]


# ---------------------------------------------------------------------------------- keys

def host_key() -> tuple[Path, str]:
    """The guest's dropbear host key (generated once per cache) and its public line."""
    keyfile = cache.cache_root() / "keys" / "dropbear_ed25519_host_key"
    keyfile.parent.mkdir(parents=True, exist_ok=True)

    def generate(tmp: Path) -> None:
        tmp.unlink()
        hostcmd.run(["dropbearkey", "-t", "ed25519", "-f", str(tmp)], what="dropbearkey")

    cache.ensure_file(keyfile, generate)
    out = hostcmd.run(["dropbearkey", "-y", "-f", str(keyfile)], what="dropbearkey -y")
    line = next((ln for ln in out.splitlines() if ln.startswith("ssh-ed25519 ")), None)
    if line is None:
        raise KernelError("dropbearkey printed no public key", f"delete {keyfile} and retry")
    return keyfile, " ".join(line.split()[:2])


# ---------------------------------------------------------------------------------- image

def _dirs_for(paths: Iterable[str]) -> set[str]:
    """Every directory the paths need, parents included."""
    dirs: set[str] = set()
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return dirs


def image_entries(kernel: KernelArtifact, platform: Platform, userland: Userland,
                  extra: Sequence[cpio.Entry] = ()) -> tuple[list[cpio.Entry], str]:
    keyfile, public = host_key()
    files: list[cpio.Entry] = [
        cpio.file("init", (IMAGES_DIR / "init.sh").read_bytes(), 0o755),
        cpio.file("etc/harness/agent.sh", (IMAGES_DIR / "agent.sh").read_bytes(), 0o644),
        cpio.file("etc/inittab", (IMAGES_DIR / "inittab").read_bytes()),
        cpio.file("etc/passwd", (IMAGES_DIR / "passwd").read_bytes()),
        cpio.file("etc/group", (IMAGES_DIR / "group").read_bytes()),
        cpio.file("etc/shells", (IMAGES_DIR / "shells").read_bytes()),
        cpio.file("etc/dropbear/dropbear_ed25519_host_key", keyfile.read_bytes(), 0o600),
        cpio.file("bin/busybox", userland.busybox.read_bytes(), 0o755),
        cpio.file("sbin/dropbear.bin", userland.dropbear.read_bytes(), 0o755),
        cpio.file("sbin/dropbear", b"#!/bin/sh\nLD_LIBRARY_PATH=/lib exec /sbin/dropbear.bin "
                  b"\"$@\"\n", 0o755),
    ]
    for target, src in sorted(library_closure(userland.dropbear, userland).items()):
        files.append(cpio.file(target, src.read_bytes(), 0o755))
    mods, order = module_entries(kernel, platform.guest_modules, OPTIONAL_MODULES)
    files += mods
    files.append(cpio.file("etc/harness/modules", order.encode()))
    files += extra
    # The applet list comes from the host's busybox: the same Debian version as the guest's,
    # and a foreign one could not run here.
    applets = hostcmd.run(["busybox", "--list"], what="busybox --list").split()
    links = [cpio.symlink(f"bin/{a}", "busybox") for a in applets if a != "busybox"]
    wanted_dirs = _dirs_for([e.name for e in files + links])
    wanted_dirs |= {"proc", "sys", "dev", "tmp", "run", "var", "mnt"}
    wanted_dirs.discard("root")
    dirs = [cpio.directory(d) for d in sorted(wanted_dirs, key=lambda d: (d.count("/"), d))]
    entries = [*dirs, cpio.directory("root", 0o700), cpio.chardev("dev/console", 5, 1),
               *files, *links]
    return entries, public


def build_image(kernel: KernelArtifact, platform: Platform,
                extra: Sequence[cpio.Entry] = ()) -> GuestImage:
    entries, public = image_entries(kernel, platform, guest_userland(platform), extra)
    data = cpio.archive(entries)
    key = cache.digest([data])
    path = cache.cache_root() / "images" / f"{platform.name}-{kernel.release}-{key}.cpio"
    path.parent.mkdir(parents=True, exist_ok=True)
    cache.ensure_file(path, lambda tmp: tmp.write_bytes(data))
    return GuestImage(path, key, public)
