"""A kernel ready to boot and to build modules for, and the checks it must pass (where it came
from is harness.kernel's and harness.debian's business)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import cache
from .errors import KernelError
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
    suite: str | None = None  # the Debian suite it came from (None: not a Debian package)
    package_version: str | None = None  # the Debian version of its packages
    build: str | None = None  # a source build's identity: its plan and tree state
    source: str | None = None  # a source build's tree and state, as people read them

    def describe(self) -> str:
        """What a run prints and records: the spec and exactly what it resolved to."""
        if self.source is not None:
            return f"{self.source} = {self.release}"
        if self.package_version is None:
            return f"{self.spec} ({self.release})"
        return f"{self.spec} = {self.release} ({self.package_version}, {self.suite})"

    def config(self) -> dict[str, str]:
        return parse_config(self.config_path.read_text())


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
