"""Where a kernel comes from → a :class:`KernelArtifact` ready to boot and to build modules for.

Sources:
- ``debian:6.1``: the kernel Debian's ``linux-image-<arch>`` metapackage depends on;
- ``debian:6.12``: the newest ``linux-image-6.12.*-<arch>-unsigned`` the archive carries;
- a path to a prebuilt image, with ``--headers DIR`` (a kbuild tree with its .config) and
  optionally ``--modules DIR`` (its ``lib/modules/<release>``).
Debian packages are fetched with ``apt-get download``, unpacked with ``dpkg -x`` into the cache
and never fetched twice; ``depmod`` writes the modules.dep the package leaves out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import cache, hostcmd
from .errors import ConfigError, KernelError
from .kconfig import builtin_required, missing_options, parse_config
from .platforms import Platform
from .vmlinux import VmlinuxError, extract_vmlinux, has_pvh_note


@dataclass(frozen=True)
class KernelArtifact:
    spec: str  # what the user asked for: "debian:6.1" or a path
    release: str  # uname -r
    debian_arch: str
    image: Path  # as shipped: bzImage/vmlinuz or arm64 Image(.gz)
    boot_image: Path  # what QEMU boots: the PVH vmlinux on x86 when possible
    config_path: Path
    modules_dir: Path | None  # lib/modules/<release>, with modules.dep
    kbuild_dir: Path | None  # where `make -C ... M=` builds external modules

    def config(self) -> dict[str, str]:
        return parse_config(self.config_path.read_text())


DEBIAN_SERIES = ("6.1", "6.12")
KERNEL_CACHE_FORMAT = "v2"  # bump when what a cached kernel entry holds changes


def resolve_kernel(spec: str, platform: Platform, *, headers: Path | None = None,
                   modules: Path | None = None) -> KernelArtifact:
    """Turn a ``--kernel`` value into an artifact, fetching and unpacking it if needed."""
    if spec.startswith("debian:"):
        series = spec.removeprefix("debian:")
        if series not in DEBIAN_SERIES:
            raise ConfigError(f"unknown Debian kernel {spec!r}",
                              f"use one of {', '.join('debian:' + s for s in DEBIAN_SERIES)}")
        return _debian_kernel(spec, series, platform)
    return _prebuilt_kernel(spec, platform, headers, modules)


# ---------------------------------------------------------------------------------- Debian

def debian_image_package(series: str, debian_arch: str) -> str:
    """The binary package name of the Debian kernel for a series, from the local apt lists."""
    if series == "6.1":
        out = hostcmd.run(["apt-cache", "depends", f"linux-image-{debian_arch}:{debian_arch}"],
                          what="apt-cache depends")
        return pick_metapackage_target(out, debian_arch)
    names = hostcmd.run(["apt-cache", "pkgnames", f"linux-image-{series}."],
                        what="apt-cache pkgnames").split()
    return pick_newest_unsigned(names, series, debian_arch)


def pick_metapackage_target(apt_depends_output: str, debian_arch: str) -> str:
    for line in apt_depends_output.splitlines():
        m = re.match(rf"\s*\|?Depends:\s*(linux-image-[\w.+-]+-{debian_arch})(:\w+)?\s*$", line)
        if m:
            return m.group(1)
    raise KernelError(f"linux-image-{debian_arch} depends on no kernel in the apt lists",
                      "run 'apt-get update' (make deps does)")


def pick_newest_unsigned(names: list[str], series: str, debian_arch: str) -> str:
    pattern = re.compile(
        rf"^linux-image-({re.escape(series)}\.(\d+)\+deb\d+)-{debian_arch}-unsigned$")
    found = [(int(m.group(2)), n) for n in names if (m := pattern.match(n))]
    if not found:
        raise KernelError(f"no linux-image-{series}.*-{debian_arch}-unsigned in the apt lists",
                          "run 'apt-get update' (make deps does); bookworm-backports or "
                          "bookworm-updates must be in the sources")
    return max(found)[1]


def _package_version(package: str) -> str:
    out = hostcmd.run(["apt-cache", "show", "--no-all-versions", package], what="apt-cache show")
    m = re.search(r"^Version:\s*(\S+)", out, re.M)
    if not m:
        raise KernelError(f"apt knows no version of {package}", "run 'apt-get update'")
    return m.group(1)


def _header_packages(release: str, debian_arch: str) -> list[str]:
    """The headers package and what it needs to build modules: -common and linux-kbuild."""
    headers = f"linux-headers-{release}"
    out = hostcmd.run(["apt-cache", "depends", f"{headers}:{debian_arch}"],
                      what="apt-cache depends")
    # Any ":arch" qualifier is dropped: -common is arch:all and kbuild must be the host's own.
    # (apt prints a foreign-arch query's arch:all dependency as "<name:arch>".)
    deps = re.findall(r"Depends:\s*<?(linux-(?:headers-[\w.+-]+-common|kbuild-[\w.+-]+))"
                      r"(?::\w+)?>?\s*$", out, re.M)
    # Headers are per-arch; -common is arch:all; kbuild is host tooling (always the host's arch).
    return [f"{headers}:{debian_arch}", *dict.fromkeys(deps)]


APT_LISTS = Path("/var/lib/apt/lists")


def _resolve_debian(series: str, arch: str) -> tuple[str, str]:
    """(image package, version) for a series, memoised until the apt lists change: asking
    apt-cache costs about a second, and every boot asks."""
    memo = cache.cache_root() / "debian-kernels.json"
    stamp = str(APT_LISTS.stat().st_mtime_ns) if APT_LISTS.exists() else ""
    key = f"{series}:{arch}"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    hit = known.get(key)
    if isinstance(hit, list) and len(hit) == 3 and hit[2] == stamp:
        return str(hit[0]), str(hit[1])
    package = debian_image_package(series, arch)
    version = _package_version(f"{package}:{arch}")
    known[key] = [package, version, stamp]
    with cache.locked(memo):
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, memo)
    return package, version


def _debian_kernel(spec: str, series: str, platform: Platform) -> KernelArtifact:
    arch = platform.debian_arch
    image_pkg, version = _resolve_debian(series, arch)
    release = image_pkg.removeprefix("linux-image-").removesuffix("-unsigned")
    entry = cache.cache_root() / "kernels" / f"{release}_{version}_{KERNEL_CACHE_FORMAT}"

    def build(tmp: Path) -> None:
        debs = tmp / "debs"
        debs.mkdir()
        packages = [f"{image_pkg}:{arch}", *_header_packages(release, arch)]
        hostcmd.run(["apt-get", "download", "-q", *packages], cwd=debs, what="apt-get download")
        root = tmp / "root"
        for deb in sorted(debs.glob("*.deb")):
            hostcmd.run(["dpkg", "-x", str(deb), str(root)], what=f"dpkg -x {deb.name}")
        hostcmd.run(["depmod", "-b", str(root), release], what="depmod")
        shutil.rmtree(debs)
        kbuild = root / "usr" / "src" / f"linux-headers-{release}"
        if not list((root / "usr" / "src").glob("linux-headers-*-common")):
            raise KernelError(f"the headers of {release} came without their -common part",
                              "report this: the apt dependency parsing missed it")
        relocate_headers(kbuild)

    entry.parent.mkdir(parents=True, exist_ok=True)
    cache.ensure_dir(entry, build)
    root = entry / "root"
    relocate_headers(root / "usr" / "src" / f"linux-headers-{release}")
    image = root / "boot" / f"vmlinuz-{release}"
    config_path = root / "boot" / f"config-{release}"
    artifact = KernelArtifact(
        spec=spec, release=release, debian_arch=arch, image=image,
        boot_image=boot_image(image, entry / "vmlinux", platform, config_path),
        config_path=config_path,
        modules_dir=root / "lib" / "modules" / release,
        kbuild_dir=root / "usr" / "src" / f"linux-headers-{release}")
    check_kernel(artifact, platform)
    return artifact


def relocate_headers(kbuild: Path) -> None:
    """Make an unpacked Debian headers tree usable where it is, not only under /usr/src.

    Its Makefile is one line, ``include /usr/src/linux-headers-<abi>-common/Makefile``; the
    absolute path becomes one relative to the Makefile itself. Idempotent.
    """
    makefile = kbuild / "Makefile"
    if not makefile.is_file():
        return
    text = makefile.read_text()
    fixed = re.sub(r"^include /usr/src/(\S+)$",
                   r"include $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/../\1)", text,
                   flags=re.M)
    if fixed != text:
        makefile.write_text(fixed)


def boot_image(image: Path, vmlinux: Path, platform: Platform, config_path: Path) -> Path:
    """What QEMU should boot: on x86 with CONFIG_PVH, the uncompressed vmlinux (extracted once
    into ``vmlinux``), which QEMU enters directly without the guest decompressing itself."""
    if vmlinux.is_file():
        return vmlinux
    if platform.arch != "x86_64" or parse_config(config_path.read_text()).get("CONFIG_PVH") != "y":
        return image
    try:
        elf = extract_vmlinux(image.read_bytes())
    except VmlinuxError:
        return image  # boot the bzImage as it is: slower, still correct
    if not has_pvh_note(elf):
        return image
    return cache.ensure_file(vmlinux, lambda tmp: tmp.write_bytes(elf))


# ---------------------------------------------------------------------------------- prebuilt

def _prebuilt_kernel(spec: str, platform: Platform, headers: Path | None,
                     modules: Path | None) -> KernelArtifact:
    image = Path(spec).expanduser()
    if not image.is_file():
        raise ConfigError(f"kernel image {image} does not exist",
                          "pass debian:6.1, debian:6.12 or the path of a bzImage/Image")
    if headers is None:
        raise ConfigError(f"kernel image {image} needs --headers DIR",
                          "point --headers at its build tree (with .config and Module.symvers)")
    config_path = headers / ".config"
    if not config_path.is_file():
        raise ConfigError(f"--headers {headers} has no .config",
                          "use the kernel's build directory or its installed headers")
    release = headers_release(headers)
    image_rel = image_release(image.read_bytes()[:65536])
    if image_rel is not None and image_rel != release:
        raise ConfigError(f"kernel image {image} is {image_rel} but --headers {headers} are for "
                          f"{release}", "pass the headers built with that image")
    if modules is not None and not (modules / "modules.dep").is_file():
        raise ConfigError(f"--modules {modules} has no modules.dep",
                          f"pass lib/modules/{release} of an installed tree (run depmod)")
    key = cache.digest([str(image.resolve()), str(image.stat().st_mtime_ns), release])
    vmlinux = cache.cache_root() / "prebuilt" / f"{key}.vmlinux"
    vmlinux.parent.mkdir(parents=True, exist_ok=True)
    artifact = KernelArtifact(
        spec=spec, release=release, debian_arch=platform.debian_arch, image=image,
        boot_image=boot_image(image, vmlinux, platform, config_path), config_path=config_path,
        modules_dir=modules, kbuild_dir=headers)
    check_kernel(artifact, platform)
    return artifact


def headers_release(headers: Path) -> str:
    """The release a kbuild tree builds for: UTS_RELEASE, what vermagic and uname -r carry.

    (Debian's headers put the upstream version in include/config/kernel.release, not uname -r,
    so include/generated/utsrelease.h comes first.)
    """
    uts = headers / "include" / "generated" / "utsrelease.h"
    if uts.is_file():
        m = re.search(r'UTS_RELEASE\s+"([^"]+)"', uts.read_text())
        if m:
            return m.group(1)
    release_file = headers / "include" / "config" / "kernel.release"
    if release_file.is_file():
        return release_file.read_text().strip()
    raise ConfigError(f"--headers {headers} names no kernel release (no "
                      "include/generated/utsrelease.h)", "run 'make modules_prepare' in that tree")


def image_release(head: bytes) -> str | None:
    """The release in an x86 bzImage's version string (boot protocol: kernel_version at 0x20e,
    an offset from 0x200), or None for other images."""
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return None
    offset = int.from_bytes(head[0x20E:0x210], "little") + 0x200
    text = head[offset:offset + 256].split(b"\0")[0].decode(errors="replace")
    return text.split()[0] if text.strip() else None


# ---------------------------------------------------------------------------------- checks

def check_kernel(artifact: KernelArtifact, platform: Platform) -> None:
    """Refuse a kernel that cannot give this platform an IOMMU or a control channel."""
    problem = config_problem(artifact.config(), platform,
                             has_modules=artifact.modules_dir is not None)
    if problem:
        raise KernelError(f"kernel {artifact.release} cannot run on {platform.name}: {problem}",
                          "rebuild it with those options, or pick another kernel")


def config_problem(config: dict[str, str], platform: Platform, *, has_modules: bool) -> str:
    """Empty if the configuration fits the platform, else what is missing (pure)."""
    not_builtin = builtin_required(config, platform.required_builtin)
    if not_builtin:
        return "needs " + ", ".join(f"{opt}=y" for opt in not_builtin)
    missing = missing_options(config, platform.required_any)
    if missing:
        return "needs " + ", ".join(f"{opt}=y or =m" for opt in missing)
    modular = [opt for opt in platform.required_any if config.get(opt) == "m"]
    if modular and not has_modules:
        return (f"{', '.join(modular)} are modules but no modules were given "
                "(pass --modules DIR, its lib/modules/<release>)")
    return ""
