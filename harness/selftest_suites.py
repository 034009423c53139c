"""The kernel's own selftests that ``iommu-harness selftest`` runs inside its guests, one unit
per suite: the configuration fragment the suite needs, the programs it builds from the tree
under test (statically, against the build's own ``headers_install``), the topology its guest
gets, the guest's set-up, and the command lines that run each program there.

- ``iommufd``: tools/testing/selftests/iommu/iommufd.c on the mock domains and devices of
  IOMMUFD_TEST, x86_64 only (on arm64 7.x IOMMUFD_TEST cannot be selected: the generic page
  tables it needs are only selectable with COMPILE_TEST).
- ``vfio``: tools/testing/selftests/vfio (6.18 and later), each program on each device of the
  suite's topology bound to vfio-pci: edu always (every test that needs only a device on
  vfio-pci: DMA mapping in every IOMMU mode, the device's regions, iommufd set-up), and igb
  where QEMU has it (8.0 and later), the one QEMU device the suite's driver library drives, for
  vfio_pci_driver_test's real DMA and SR-IOV.
"""

from __future__ import annotations

import os
import shlex
import shutil
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, get_args

from . import cache, hostcmd
from .debian.apt import download_packages
from .errors import ConfigError
from .kbuild import BuildPlan, SourceBuild
from .kfragments import fragment_files
from .platforms import Platform
from .prepare import TOPOLOGIES_DIR
from .srctree import tree_state
from .toolchain import CROSS_COMPILE, DEBIAN_ARCH, GNU_TYPE, KBUILD_ARCH
from .topology import Topology, device_bdf

SuiteName = Literal["iommufd", "vfio"]
SUITES: tuple[str, ...] = get_args(SuiteName)
GUEST_DIR = "/bin/selftests"
KSFT_SKIP = 4  # tools/testing/selftests/kselftest.h: a program that skips as a whole
# Huge pages reserved before a suite runs: iommufd's 128M dirty-tracking tests map 128 MiB of
# them (2 MiB pages on x86_64), vfio_dma_mapping_test's hugetlb_2mb variants one each; the
# guest has 512 MiB.
HUGEPAGES = 96


@dataclass(frozen=True)
class Program:
    """One selftest program built from the tree, and where the guest has it."""

    suite: str
    name: str
    host: Path

    @property
    def guest_path(self) -> str:
        return f"{GUEST_DIR}/{self.suite}/{self.name}"


@dataclass(frozen=True)
class Invocation:
    """One run of a program in the guest: its command line, the prefix of its results'
    names, and why it does not run where it cannot (``skip``: then it is not started)."""

    program: Program
    command: str
    label: str
    skip: str = ""


class Suite(ABC):
    """A selftest suite of the kernel tree, as the harness builds and runs it."""

    name: ClassVar[SuiteName]
    folder: ClassVar[str]  # in the tree
    marker: ClassVar[str]  # what a tree with the suite has
    kconfig: ClassVar[str]  # the optional fragment (images/kconfig/) it needs
    platforms: ClassVar[tuple[str, ...]]
    first_release: ClassVar[str]  # for the error where a tree lacks the suite
    required: ClassVar[tuple[str, str]]  # the option the built kernel needs, and its value
    driver: ClassVar[str | None] = None  # every device of the topology is bound to it first
    memory_mb: ClassVar[int | None] = None  # the guest's memory, where the platform's is short

    def check_platform(self, platform: Platform) -> None:
        if platform.name not in self.platforms:
            raise ConfigError(f"the {self.name} selftest does not run on {platform.name}",
                              f"use --platform {' or '.join(self.platforms)}")

    def check_tree(self, tree: Path) -> None:
        if not (tree / self.marker).exists():
            raise ConfigError(f"the kernel tree {tree} has no {self.marker}",
                              f"use a tree of {self.first_release} or later, or another "
                              "--suite")

    def topology(self, qemu_devices: set[str]) -> Path:
        return TOPOLOGIES_DIR / "default.toml"

    def notice(self, qemu_devices: set[str], qemu_version: str) -> str:
        """One line about what this host's QEMU leaves out, or nothing."""
        return ""

    def build(self, tree: Path, platform: Platform, fragments: Sequence[str]) -> list[Program]:
        """The suite's programs, static, for the tree's current state (cached by state)."""
        plan = BuildPlan(tree, platform.arch, tuple(fragment_files(platform.debian_arch,
                                                                   fragments)))
        build = SourceBuild(plan)
        entry = cache.cache_root() / "selftests" / \
            f"{self.name}-{plan.key}-{tree_state(tree).key}"
        entry.parent.mkdir(parents=True, exist_ok=True)

        def make(tmp: Path) -> None:
            self._compile(tree, build.headers(), tmp, platform.arch)

        folder = cache.ensure_dir(entry, make)
        return [Program(self.name, p.name, p) for p in sorted(folder.iterdir())
                if p.is_file() and p.stat().st_mode & 0o111]

    @abstractmethod
    def _compile(self, tree: Path, headers: Path, out: Path, arch: str) -> None:
        """Compile the programs into ``out`` for ``arch`` (executables only are kept as
        programs)."""

    def setup_commands(self, topology: Topology) -> list[str]:
        """Guest shell commands before the programs run."""
        return [f"echo {HUGEPAGES} > /proc/sys/vm/nr_hugepages"]

    @abstractmethod
    def invocations(self, programs: Sequence[Program], topology: Topology,
                    tests: Sequence[str], sriov: Sequence[str]) -> list[Invocation]:
        """The runs, in order. ``tests``: only these (kselftest's ``-r``); ``sriov``: the
        topology's devices that have the SR-IOV capability in the guest."""


def _only(tests: Sequence[str]) -> str:
    return "".join(f" -r {shlex.quote(t)}" for t in tests)


class IommufdSuite(Suite):
    name = "iommufd"
    folder = "tools/testing/selftests/iommu"
    kconfig = "iommufd-test"
    platforms = ("x86_64-vtd",)
    first_release = "6.2"
    required = ("CONFIG_IOMMUFD_TEST", "y")
    SOURCE = marker = "tools/testing/selftests/iommu/iommufd.c"

    def _compile(self, tree: Path, headers: Path, out: Path, arch: str) -> None:
        hostcmd.run(["gcc", "-static", "-O2", "-Wall", "-Wno-unused-function", "-D_GNU_SOURCE",
                     "-isystem", str(headers), "-I", str(tree / "tools" / "testing" /
                                                         "selftests"),
                     "-o", str(out / "iommufd"), str(tree / self.SOURCE), "-lcap",
                     "-lpthread"], what=f"building {self.SOURCE}", timeout=600)

    def invocations(self, programs: Sequence[Program], topology: Topology,
                    tests: Sequence[str], sriov: Sequence[str]) -> list[Invocation]:
        return [Invocation(p, p.guest_path + _only(tests), "iommufd") for p in programs]


VFIO_DEVICE_WITH_DRIVER = "igb"  # QEMU 8.0+; lib/drivers/igb in the suite (7.3 and later)
SRIOV_PROGRAM = "vfio_pci_sriov_uapi_test"


class VfioSuite(Suite):
    name = "vfio"
    folder = "tools/testing/selftests/vfio"
    kconfig = "vfio-test"
    platforms = ("x86_64-vtd", "aarch64-smmuv3")
    first_release = "6.18"
    required = ("CONFIG_VFIO_PCI", "m")
    marker = "tools/testing/selftests/vfio/Makefile"
    driver = "vfio-pci"
    # vfio_pci_driver_test maps (and so pins) 1 GiB and 2 MiB of shared memory
    memory_mb = 2048

    def topology(self, qemu_devices: set[str]) -> Path:
        with_igb = VFIO_DEVICE_WITH_DRIVER in qemu_devices
        return TOPOLOGIES_DIR / ("vfio-igb.toml" if with_igb else "vfio.toml")

    def notice(self, qemu_devices: set[str], qemu_version: str) -> str:
        if VFIO_DEVICE_WITH_DRIVER in qemu_devices:
            return ""
        return (f"{qemu_version} has no {VFIO_DEVICE_WITH_DRIVER} device: the VFIO selftests "
                "run on edu only, where vfio_pci_driver_test and the SR-IOV test skip (QEMU "
                "8.0 and later has igb)")

    def _compile(self, tree: Path, headers: Path, out: Path, arch: str) -> None:
        hostcmd.run(["make", "-C", str(tree / self.folder), f"OUTPUT={out}",
                     f"KHDR_INCLUDES=-isystem {headers}", *make_toolchain(arch)],
                    what=f"building {self.folder}", timeout=900)
        for leftover in out.iterdir():  # objects and dependency files: not programs
            if leftover.is_dir():
                shutil.rmtree(leftover)
            elif leftover.suffix in (".o", ".d"):
                leftover.unlink()

    def setup_commands(self, topology: Topology) -> list[str]:
        # vfio_pci_sriov_uapi_test makes a VF through the PF's sriov_numvfs, which vfio-pci
        # refuses (ENOENT) unless enable_sriov (drivers/vfio/pci/vfio_pci.c, writable at run
        # time)
        return [*super().setup_commands(topology),
                "echo Y > /sys/module/vfio_pci/parameters/enable_sriov"]

    def invocations(self, programs: Sequence[Program], topology: Topology,
                    tests: Sequence[str], sriov: Sequence[str]) -> list[Invocation]:
        runs = []
        for d in topology.devices:
            bdf = device_bdf(topology, d)
            for p in programs:
                skip = ""
                if p.name == SRIOV_PROGRAM and d.id not in sriov:
                    skip = f"{d.id} ({d.kind}) has no SR-IOV capability"
                runs.append(Invocation(p, f"VFIO_SELFTESTS_BDF={bdf} {p.guest_path}"
                                          f"{_only(tests)}", f"vfio {d.id}", skip))
        return runs


def make_toolchain(arch: str, host_arch: str | None = None) -> list[str]:
    """The VFIO suite's make variables for ``arch``: static, and across architectures the cross
    compiler with an arm64 libuuid beside it (the cross toolchain has only the C library)."""
    if arch == (host_arch or os.uname().machine):
        return ["CC=gcc", f"ARCH={arch}", "LDFLAGS=-static -pthread"]
    root = cross_uuid_root(DEBIAN_ARCH[arch])
    return [f"CC={CROSS_COMPILE[arch]}gcc", f"ARCH={KBUILD_ARCH[arch]}",
            f"EXTRA_CFLAGS=-I{root}/usr/include",
            f"LDFLAGS=-static -pthread -L{root}/usr/lib/{GNU_TYPE[arch]}"]


def cross_uuid_root(debian_arch: str) -> Path:
    """Debian's uuid-dev for another architecture, of the host's own version (so built against
    the C library the host's cross toolchain has), unpacked once into the cache."""
    version = hostcmd.run(["dpkg-query", "-W", "-f=${Version}", "uuid-dev"],
                          what="dpkg-query uuid-dev (make deps installs it)").strip()
    entry = cache.cache_root() / "sysroots" / f"uuid-dev-{debian_arch}-{version}"
    entry.parent.mkdir(parents=True, exist_ok=True)

    def make(tmp: Path) -> None:
        download_packages([f"uuid-dev:{debian_arch}={version}"], tmp,
                          f"uuid-dev for {debian_arch}")
        deb = next(tmp.glob("uuid-dev_*.deb"))
        hostcmd.run(["dpkg-deb", "-x", str(deb), str(tmp / "root")], what=f"unpacking {deb}")
        deb.unlink()

    return cache.ensure_dir(entry, make) / "root"


SUITE_TYPES: dict[str, type[Suite]] = {"iommufd": IommufdSuite, "vfio": VfioSuite}


def suite(name: str) -> Suite:
    return SUITE_TYPES[name]()
