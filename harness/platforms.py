"""Frozen platform presets: one per emulated machine with an IOMMU (as kunit's qemu_configs).

A preset is data only; :mod:`harness.qemu` turns it, plus a topology, into a literal argv.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class InfraDevice:
    """A device the harness itself places on the root bus (control channel, network)."""

    role: str  # "control" (virtio console for the agent) or "network" (SSH)
    qemu_driver: str
    qemu_id: str
    slot: int
    pci_id: str  # "vendor:device" as the guest reads it from sysfs


@dataclass(frozen=True)
class FixedGroup:
    """A group the machine model always forms, whatever the topology (bus address → PCI id)."""

    members: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Platform:
    name: str
    arch: str  # uname -m of the guest
    debian_arch: str  # dpkg architecture of its kernel packages
    qemu_binary: str
    machine: str  # the -M value
    cpu_tcg: str
    cpu_kvm: str
    iommu_device: tuple[str, ...]  # -device value(s) creating the IOMMU, before any PCI device
    console: str  # the kernel console device name in the guest
    cmdline: tuple[str, ...]
    root_bus: str
    required_builtin: tuple[str, ...]  # kernel options that must be =y for the IOMMU to exist
    required_any: tuple[str, ...]  # options that must be y or m (modules the guest loads)
    guest_modules: tuple[str, ...]  # module names loaded at boot, closure from modules.dep
    infra: tuple[InfraDevice, ...]
    fixed_groups: tuple[FixedGroup, ...]
    default_domain_type: str  # what /sys/kernel/iommu_groups/N/type reads for our devices
    # True where a PCI device gets an IOMMU group only when a driver probes it (SMMUv3: DMA is
    # configured at probe, drivers/base/dd.c: really_probe → pci_dma_configure →
    # of_dma_configure → iommu_probe_device); False where every device gets one at boot (VT-d).
    groups_need_driver: bool = False
    # True where the devices behind one PCIe-to-PCI bridge share one ID that the IOMMU driver
    # takes only once (SMMUv3: the bridge's alias stream ID, arm_smmu_insert_master), so only
    # the first of them to get a group does.
    alias_taken_once: bool = False
    # Groups of the machine's own driverless devices, formed only where groups come at device
    # add rather than at driver probe (SMMUv3 with 7.x kernels: the host bridge).
    driverless_groups: tuple[FixedGroup, ...] = ()
    memory_mb: int = 512
    kvm_capable_host_arch: str = "x86_64"
    user_slots: tuple[int, int] = (1, 0x17)  # root-bus slots a topology may use


# What every platform's guest loads and needs for its control console and network.
_VIRTIO_OPTIONS = ("CONFIG_VIRTIO_PCI", "CONFIG_VIRTIO_CONSOLE", "CONFIG_VIRTIO_NET")
_GUEST_MODULES = ("virtio_pci", "virtio_console", "virtio_net", "pci_stub")
# Loaded too where the kernel has them (modules or built in): VFIO for guest user space, with
# the type1 backend VFIO_SET_IOMMU would otherwise request_module() (the guest has no modprobe).
OPTIONAL_MODULES = ("vfio_pci", "vfio_iommu_type1")

_INFRA = (
    InfraDevice("control", "virtio-serial-pci", "vser0", 0x18, "1af4:1003"),
    InfraDevice("network", "virtio-net-pci", "net0dev", 0x19, "1af4:1000"),
)

X86_64_VTD = Platform(
    name="x86_64-vtd",
    arch="x86_64",
    debian_arch="amd64",
    qemu_binary="qemu-system-x86_64",
    # kernel-irqchip=split is required by intel-iommu's interrupt remapping (QEMU docs,
    # docs/devel/... "intremap=on requires kernel-irqchip=off|split").
    machine="q35,kernel-irqchip=split",
    cpu_tcg="max",
    cpu_kvm="host",
    iommu_device=("intel-iommu,intremap=on,caching-mode=on",),
    console="ttyS0",
    cmdline=("console=ttyS0,115200", "intel_iommu=on", "panic=-1", "oops=panic",
             "tsc=reliable", "no_timer_check", "random.trust_cpu=on"),
    root_bus="pcie.0",
    required_builtin=("CONFIG_PCI", "CONFIG_IOMMU_SUPPORT", "CONFIG_INTEL_IOMMU",
                      "CONFIG_IRQ_REMAP", "CONFIG_SERIAL_8250_CONSOLE",
                      "CONFIG_BLK_DEV_INITRD", "CONFIG_DEVTMPFS"),
    required_any=_VIRTIO_OPTIONS,
    guest_modules=_GUEST_MODULES,
    infra=_INFRA,
    fixed_groups=(
        FixedGroup((("0000:00:00.0", "8086:29c0"),)),
        # The ICH9 functions q35 always creates share one group (no ACS between them).
        FixedGroup((("0000:00:1f.0", "8086:2918"), ("0000:00:1f.2", "8086:2922"),
                    ("0000:00:1f.3", "8086:2930"))),
    ),
    default_domain_type="DMA",
)

AARCH64_SMMUV3 = Platform(
    name="aarch64-smmuv3",
    arch="aarch64",
    debian_arch="arm64",
    qemu_binary="qemu-system-aarch64",
    machine="virt,iommu=smmuv3,gic-version=3",
    # pauth-impdef: QEMU's cheap pointer-authentication algorithm; the architected one (QARMA)
    # dominates TCG time for a kernel built with pointer authentication (QEMU docs, arm cpu
    # features).
    cpu_tcg="max,pauth-impdef=on",
    cpu_kvm="host",
    iommu_device=(),  # the SMMUv3 is part of the machine (virt,iommu=smmuv3)
    console="ttyAMA0",
    cmdline=("console=ttyAMA0", "panic=-1", "oops=panic", "random.trust_cpu=on"),
    root_bus="pcie.0",
    required_builtin=("CONFIG_PCI", "CONFIG_IOMMU_SUPPORT", "CONFIG_ARM_SMMU_V3",
                      "CONFIG_PCI_HOST_GENERIC", "CONFIG_SERIAL_AMBA_PL011_CONSOLE",
                      "CONFIG_BLK_DEV_INITRD", "CONFIG_DEVTMPFS"),
    required_any=_VIRTIO_OPTIONS,
    guest_modules=_GUEST_MODULES,
    infra=_INFRA,
    fixed_groups=(),  # the host bridge has no driver, hence no group before 7.x
    driverless_groups=(FixedGroup((("0000:00:00.0", "1b36:0008"),)),),  # QEMU's gpex host bridge
    default_domain_type="DMA",  # Debian arm64: CONFIG_IOMMU_DEFAULT_DMA_STRICT=y
    groups_need_driver=True,
    alias_taken_once=True,
    kvm_capable_host_arch="aarch64",
)

PLATFORMS: dict[str, Platform] = {p.name: p for p in (X86_64_VTD, AARCH64_SMMUV3)}


def get_platform(name: str) -> Platform:
    try:
        return PLATFORMS[name]
    except KeyError:
        known = ", ".join(sorted(PLATFORMS))
        raise ConfigError(f"unknown platform {name!r}", f"choose one of: {known}") from None
