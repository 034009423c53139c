"""Where a kernel comes from → a :class:`KernelArtifact` ready to boot and to build modules for.

Sources:
- ``debian:<series>``, ``debian:newest``, ``debian:rc``: Debian's kernel packages, resolved
  through the harness's own apt configuration (:mod:`harness.debian`);
- a path to a prebuilt image, with ``--headers DIR`` (a kbuild tree with its .config) and
  optionally ``--modules DIR`` (its ``lib/modules/<release>``);
- a path to a kernel source tree, configured from our fragments (``--kconfig NAME`` adds
  optional ones) and built in the cache (:mod:`harness.kbuild`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from . import cache
from .artifact import KernelArtifact, boot_image, check_kernel, config_problem
from .debian.fetch import debian_kernel
from .errors import ConfigError
from .kbuild import source_kernel
from .platforms import Platform


def resolve_kernel(spec: str, platform: Platform, *, headers: Path | None = None,
                   modules: Path | None = None, kconfig: Sequence[str] = ()) -> KernelArtifact:
    """Turn a ``--kernel`` value into an artifact, fetching, unpacking or building it."""
    if Path(spec).expanduser().is_dir():
        if headers is not None or modules is not None:
            raise ConfigError(f"--headers and --modules go with a kernel image, not the tree "
                              f"{spec}", "drop them: the harness builds the tree itself")
        return source_kernel(str(Path(spec).expanduser()), platform, kconfig)
    if kconfig:
        raise ConfigError(f"--kconfig {' '.join(kconfig)} goes with a kernel source tree, not "
                          f"{spec}", "drop --kconfig, or pass --kernel DIR")
    if spec.startswith("debian:"):
        if headers is not None or modules is not None:
            raise ConfigError(f"--headers and --modules go with --kernel PATH, not {spec}",
                              "drop them: a Debian kernel brings its own")
        return debian_kernel(spec, platform)
    return _prebuilt_kernel(spec, platform, headers, modules)


# ---------------------------------------------------------------------------------- prebuilt

def _prebuilt_kernel(spec: str, platform: Platform, headers: Path | None,
                     modules: Path | None) -> KernelArtifact:
    image = Path(spec).expanduser()
    if not image.is_file():
        raise ConfigError(f"kernel image {image} does not exist",
                          "pass a debian: spec (iommu-harness kernels lists them) or the path "
                          "of a bzImage/Image")
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


__all__ = ["KernelArtifact", "boot_image", "check_kernel", "config_problem", "resolve_kernel"]
