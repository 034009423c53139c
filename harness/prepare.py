"""From what a user asked for (platform, kernel, topology, accelerator) to a bootable config.

The one place the CLI and the pytest plugin share: fetch the kernel, check it, build the image,
choose the accelerator, pick an output folder.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import cpio
from .accel import choose_accel
from .guest import GuestConfig
from .image import build_image, guest_module_entries
from .kernel import KernelArtifact, resolve_kernel
from .modules import build_modules, build_tools
from .platforms import get_platform
from .snapshot import RESTORE_UNMIGRATED, SAVE_UNMIGRATED, SnapshotStore, snapshots_wanted
from .topology import load_topology

TOPOLOGIES_DIR = Path(__file__).resolve().parent / "topologies"
DEFAULT_TOPOLOGY = TOPOLOGIES_DIR / "default.toml"
ENV_OUT = "IOMMU_HARNESS_OUT"
# A guest is ready once its control agent answers, its network link is up (the kernel logs that
# a moment after boot: a guest saved before it would log it into the first scenario of every
# restore) and ih_attach is loaded (what every scenario needs first). A saved guest is saved
# ready.
LINK_UP = ("for i in $(seq 200); do [ \"$(cat /sys/class/net/eth0/operstate 2>/dev/null "
           "|| echo up)\" = up ] && break; sleep 0.05; done")
READY = (LINK_UP, 'insmod "/lib/modules/$(uname -r)/extra/ih_attach.ko"')


@dataclass(frozen=True)
class GuestRequest:
    platform: str = "x86_64-vtd"
    kernel: str = "debian:6.1"
    topology: Path = DEFAULT_TOPOLOGY
    accel: str = "auto"
    headers: Path | None = None
    modules: Path | None = None
    out_root: Path | None = None
    boot_timeout: float = 90.0
    snapshot: bool = True  # start from a saved guest where one is (--no-snapshot: False)
    kconfig: tuple[str, ...] = ()  # optional fragments for a kernel source tree (--kconfig)
    extra_files: tuple[tuple[str, Path], ...] = ()  # (path in the guest, host file), e.g. a
    #                                                 selftest binary built from the tree


def out_root(requested: Path | None = None) -> Path:
    """``--out``, else ``$IOMMU_HARNESS_OUT``, else ``./out``."""
    root = requested or Path(os.environ.get(ENV_OUT, "out"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def guest_dir(root: Path, label: str) -> Path:
    """A fresh folder for one guest's logs; unique across concurrent harness runs."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = root / f"{stamp}-{label}-{os.getpid()}-{n}"
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"cannot create a guest folder under {root}")


def kernel_record(kernel: KernelArtifact) -> dict[str, str | None]:
    """What a run records of its kernel: the spec and exactly what it resolved to."""
    return {"spec": kernel.spec, "release": kernel.release, "package_version":
            kernel.package_version, "suite": kernel.suite, "arch": kernel.debian_arch,
            "source": kernel.source}


def prepare(request: GuestRequest, label: str = "") -> GuestConfig:
    platform = get_platform(request.platform)
    topology = load_topology(request.topology, platform)
    kernel = resolve_kernel(request.kernel, platform, headers=request.headers,
                            modules=request.modules, kconfig=request.kconfig)
    modules = build_modules(kernel, platform)
    tools = build_tools(platform)
    extra = [*guest_module_entries(kernel, modules, tools),
             *(cpio.file(target.lstrip("/"), source.read_bytes(), 0o755)
               for target, source in request.extra_files)]
    image = build_image(kernel, platform, extra=extra)
    accel = choose_accel(request.accel, platform, kernel.boot_image)
    folder = guest_dir(out_root(request.out_root),
                       label or f"{platform.name}-{kernel.release}")
    (folder / "kernel.json").write_text(json.dumps(kernel_record(kernel), indent=1) + "\n")
    return GuestConfig(platform=platform, kernel=kernel, image=image, topology=topology,
                       accel=accel, out_dir=folder, boot_timeout=request.boot_timeout,
                       ready=READY, before_save=(SAVE_UNMIGRATED,),
                       after_restore=(RESTORE_UNMIGRATED,),
                       snapshots=SnapshotStore.default()
                       if request.snapshot and snapshots_wanted() else None)
