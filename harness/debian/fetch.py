"""A ``debian:`` spec → a :class:`KernelArtifact` in the cache, either package layout.

The packages are fetched with our apt configuration (exact versions), unpacked with
``dpkg -x`` and never fetched twice (the cache entry is keyed by release and Debian version).
Usr-merged packages (trixie and later) put modules under ``usr/lib/modules``; the unpacked root
is usr-merged here the way Debian does it (``lib`` → ``usr/lib``), so one set of paths serves
both. ``depmod`` writes the modules.dep the packages leave out.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .. import cache, hostcmd
from ..artifact import KernelArtifact, boot_image, check_kernel
from ..errors import KernelError
from ..platforms import Platform
from . import apt
from .index import DebianKernel, parse_spec, resolve
from .layout import relocate_headers, usr_merge

KERNEL_CACHE_FORMAT = "v3"  # bump when what a cached kernel entry holds changes


def resolve_spec(spec: str, debian_arch: str) -> DebianKernel:
    """What ``spec`` names for ``debian_arch`` right now (the lists refreshed when old)."""
    parse_spec(spec)  # a malformed spec is refused before any download
    return resolve(spec, debian_arch, apt.kernel_index())


def debian_kernel(spec: str, platform: Platform) -> KernelArtifact:
    kernel = resolve_spec(spec, platform.debian_arch)
    entry = cache.cache_root() / "kernels" / f"{kernel.release}_{kernel.version}_" \
                                             f"{KERNEL_CACHE_FORMAT}"
    entry.parent.mkdir(parents=True, exist_ok=True)
    if not entry.is_dir():
        started = time.monotonic()
        apt.notice(f"fetching {kernel.release} ({kernel.version}, {kernel.suite}, "
                   f"{len(kernel.packages)} packages)")
        cache.ensure_dir(entry, lambda tmp: _unpack(kernel, tmp))
        size = json.loads((entry / "kernel.json").read_text()).get("package_bytes", 0)
        apt.notice(f"fetched and unpacked {kernel.release} in {time.monotonic() - started:.1f}s "
                   f"({size / 1e6:.0f} MB of packages)")
    root = entry / "root"
    relocate_headers(root / "usr" / "src" / f"linux-headers-{kernel.release}")
    image, config_path = kernel_files(root, kernel.release)
    artifact = KernelArtifact(
        spec=spec, release=kernel.release, debian_arch=kernel.arch, image=image,
        boot_image=boot_image(image, entry / "vmlinux", platform, config_path),
        config_path=config_path, modules_dir=root / "lib" / "modules" / kernel.release,
        kbuild_dir=root / "usr" / "src" / f"linux-headers-{kernel.release}",
        suite=kernel.suite, package_version=kernel.version)
    check_kernel(artifact, platform)
    return artifact


def kernel_files(root: Path, release: str) -> tuple[Path, Path]:
    """(image, config) of an unpacked kernel: /boot (6.x) or /usr/lib/modules/<release> (7.x)."""
    for image, config in ((root / "boot" / f"vmlinuz-{release}",
                           root / "boot" / f"config-{release}"),
                          (root / "usr" / "lib" / "modules" / release / "vmlinuz",
                           root / "usr" / "lib" / "modules" / release / "config")):
        if image.is_file() and config.is_file():
            return image, config
    raise KernelError(f"the packages of {release} hold no vmlinuz and config where Debian puts "
                      "them (/boot or /usr/lib/modules/<release>)",
                      "report this: the package layout changed")


def _unpack(kernel: DebianKernel, tmp: Path) -> None:
    debs = tmp / "debs"
    debs.mkdir()
    apt.download(kernel, debs)
    root = tmp / "root"
    root.mkdir()
    for deb in sorted(debs.glob("*.deb")):
        hostcmd.run(["dpkg", "-x", str(deb), str(root)], what=f"dpkg -x {deb.name}")
    usr_merge(root)
    hostcmd.run(["depmod", "-b", str(root), kernel.release], what="depmod")
    if not list((root / "usr" / "src").glob("linux-headers-*-common")):
        raise KernelError(f"the headers of {kernel.release} came without their -common part",
                          "report this: the package index parsing missed it")
    record = dict(kernel.to_json(), package_bytes=sum(d.stat().st_size for d in debs.iterdir()))
    (tmp / "kernel.json").write_text(json.dumps(record, indent=1))
    shutil.rmtree(debs)
