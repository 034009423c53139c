"""The kernel's compiler and the toolchain root (no network, no mmdebstrap, no chroot)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from harness import cache, hostcmd, toolchain
from harness.errors import ConfigError, HostToolError, KernelError
from harness.toolchain import (
    KernelVariables,
    Toolchain,
    compiler_package,
    in_root_argv,
    kernel_compiler,
    kernel_tree,
    mmdebstrap_argv,
    parse_kernelvariables,
    parse_madison,
    pick_suites,
    propagation_for,
    root_apt_options,
    root_packages,
    toolchain_for,
    toolchain_suites,
)

# .kernelvariables as Debian's headers ship them (6.1.0-57, 7.2.13+deb14).
VARS_61 = """\
override ARCH = arm64
override KERNELRELEASE = 6.1.0-57-arm64
CCACHE = ccache
CC = $(if $(DEBIAN_KERNEL_USE_CCACHE),$(CCACHE)) $(CROSS_COMPILE)gcc-12
ifneq ($(DEB_BUILD_ARCH),$(DEB_HOST_ARCH))
override CROSS_COMPILE = $(DEB_HOST_GNU_TYPE)-
endif
DEBIAN_KERNEL_NO_CC_VERSION_CHECK = y
"""
VARS_72_AMD64 = """\
override ARCH = x86
override KERNELRELEASE = 7.2.13+deb14-amd64
CCACHE = ccache
CC = $(if $(DEBIAN_KERNEL_USE_CCACHE),$(CCACHE)) $(CROSS_COMPILE)gcc-16
DEB_BUILD_ARCH ?= $(shell dpkg --print-architecture)
override CROSS_COMPILE = x86_64-linux-gnu-
DEBIAN_KERNEL_NO_CC_VERSION_CHECK = y
"""
VARS_72_ARM64 = """\
override ARCH = arm64
override KERNELRELEASE = 7.2.13+deb14-arm64
CCACHE = ccache
CC = $(if $(DEBIAN_KERNEL_USE_CCACHE),$(CCACHE)) $(CROSS_COMPILE)gcc-16
DEB_BUILD_ARCH ?= $(shell dpkg --print-architecture)
override CROSS_COMPILE = aarch64-linux-gnu-
override CROSS_COMPILE_COMPAT = arm-linux-gnueabihf-
override CROSS32_COMPILE = arm-linux-gnueabihf-
export CROSS_COMPILE_COMPAT CROSS32_COMPILE
DEBIAN_KERNEL_NO_CC_VERSION_CHECK = y
"""
# apt-cache madison gcc-16 gcc-16-aarch64-linux-gnu gcc-12 dwarves, with the harness's lists.
MADISON = """\
    gcc-16 |   16.2.0-4 | http://deb.debian.org/debian sid/main amd64 Packages
gcc-16-aarch64-linux-gnu | 16.2.0-3cross1 | http://deb.debian.org/debian sid/main amd64 Packages
    gcc-12 |  12.5.0-11 | http://deb.debian.org/debian sid/main amd64 Packages
    gcc-12 |   12.4.0-5 | http://deb.debian.org/debian trixie/main amd64 Packages
    gcc-12 | 12.2.0-14+deb12u1 | http://deb.debian.org/debian bookworm/main amd64 Packages
   dwarves |     1.32-1 | http://deb.debian.org/debian sid/main arm64 Packages
""" + ("   libssl3 | 3.0.22-1~deb12u2 | http://deb.debian.org/debian-security "
       "bookworm-security/main amd64 Packages\n")


@pytest.mark.parametrize(("text", "compiler", "cross"), [
    (VARS_61, "gcc-12", None),  # the override sits in a conditional a module build never meets
    (VARS_72_AMD64, "gcc-16", "x86_64-linux-gnu-"),
    (VARS_72_ARM64, "gcc-16", "aarch64-linux-gnu-"),
    ("", None, None),
    ("CC = $(CROSS_COMPILE)$(MYCC)\n", None, None),
])
def test_parse_kernelvariables(text: str, compiler: str | None, cross: str | None) -> None:
    assert parse_kernelvariables(text) == KernelVariables(compiler, cross)


@pytest.mark.parametrize(("text", "target", "host", "want"), [
    (VARS_61, "x86_64", "x86_64", "gcc-12"),
    (VARS_61, "aarch64", "x86_64", "aarch64-linux-gnu-gcc-12"),
    (VARS_72_AMD64, "x86_64", "x86_64", "x86_64-linux-gnu-gcc-16"),
    (VARS_72_ARM64, "aarch64", "x86_64", "aarch64-linux-gnu-gcc-16"),
    (VARS_72_AMD64, "x86_64", "aarch64", "x86_64-linux-gnu-gcc-16"),
    ("", "x86_64", "x86_64", "gcc"),  # a kernel built from source: kbuild's default
    ("", "aarch64", "x86_64", "aarch64-linux-gnu-gcc"),
])
def test_kernel_compiler(text: str, target: str, host: str, want: str) -> None:
    assert kernel_compiler(parse_kernelvariables(text), target, host) == want


@pytest.mark.parametrize(("compiler", "host", "package"), [
    ("gcc-12", "x86_64", "gcc-12"),
    ("x86_64-linux-gnu-gcc-16", "x86_64", "gcc-16"),
    ("aarch64-linux-gnu-gcc-16", "x86_64", "gcc-16-aarch64-linux-gnu"),
    ("x86_64-linux-gnu-gcc-16", "aarch64", "gcc-16-x86-64-linux-gnu"),
])
def test_compiler_package(compiler: str, host: str, package: str) -> None:
    assert compiler_package(compiler, host) == package


@pytest.mark.parametrize(("suite", "candidates"), [
    ("bookworm", (("bookworm",),)),
    ("bookworm-security", (("bookworm",), ("bookworm", "bookworm-security"))),
    ("trixie", (("trixie",),)),
    ("trixie-backports", (("trixie",), ("trixie", "trixie-backports"))),
    ("sid", (("sid",),)),
    ("unstable", (("sid",),)),
    ("experimental", (("sid",), ("sid", "experimental"))),
])
def test_toolchain_suites(suite: str, candidates: tuple[tuple[str, ...], ...]) -> None:
    assert toolchain_suites(suite) == candidates


def test_root_packages() -> None:
    assert root_packages("gcc-16", "x86_64", ("sid",)) == (
        "gcc-16", "gcc-16-aarch64-linux-gnu", "make", "dwarves", "libelf1t64", "libssl3t64",
        "zlib1g")
    assert root_packages("gcc-12", "x86_64", ("bookworm",))[4:6] == ("libelf1", "libssl3")
    assert root_packages("gcc-12", "aarch64", ("bookworm",))[:2] == (
        "gcc-12", "gcc-12-x86-64-linux-gnu")
    # from an overlay suite only the compilers are taken from the overlay
    assert root_packages("gcc-17", "x86_64", ("sid", "experimental"))[:3] == (
        "gcc-17/experimental", "gcc-17-aarch64-linux-gnu/experimental", "make")


def test_madison_and_the_suite_picked() -> None:
    carried = parse_madison(MADISON, "amd64")
    assert carried["gcc-16"] == {"sid"}
    assert carried["gcc-12"] == {"sid", "trixie", "bookworm"}
    assert carried["libssl3"] == {"bookworm-security"}
    assert "dwarves" not in carried  # only an arm64 line
    compilers = ("gcc-16", "gcc-16-aarch64-linux-gnu")
    # experimental's kernels are built with sid's compiler when sid has it
    assert pick_suites(toolchain_suites("experimental"), carried, compilers) == ("sid",)
    only_exp = {"gcc-17": frozenset({"experimental"}),
                "gcc-17-aarch64-linux-gnu": frozenset({"experimental"})}
    assert pick_suites(toolchain_suites("experimental"), only_exp,
                       ("gcc-17", "gcc-17-aarch64-linux-gnu")) == ("sid", "experimental")
    assert pick_suites(toolchain_suites("trixie"), carried, compilers) is None
    assert pick_suites(toolchain_suites("bookworm-security"), carried, ("gcc-12",)) == (
        "bookworm",)


def test_roots_are_made_with_the_harness_apt_settings_not_the_hosts() -> None:
    assert root_apt_options() == ('Acquire::Check-Valid-Until "false"',
                                  'Acquire::Check-Date "false"')


def test_mmdebstrap_argv() -> None:
    argv = mmdebstrap_argv(Path("/c/toolchains/x/root"), ("bookworm", "bookworm-security"),
                           ("gcc-12", "make"), ('Acquire::Check-Valid-Until "false"',))
    assert argv[:5] == ["unshare", "--mount", "--propagation", "private", "mmdebstrap"]
    assert {"--mode=root", "--format=directory", "--variant=essential",
            "--include=gcc-12,make", "--dpkgopt=path-exclude=/usr/share/doc/*",
            '--aptopt=Acquire::Check-Valid-Until "false"'} <= set(argv)
    assert argv[-4:] == ["bookworm", "/c/toolchains/x/root",
                         "deb http://deb.debian.org/debian bookworm main",
                         "deb http://deb.debian.org/debian-security bookworm-security main"]
    assert not any("recommends" in a.lower() for a in argv)  # mmdebstrap installs none


def debian_tree(tmp_path: Path) -> Path:
    """The layout of unpacked Debian headers: the kbuild programs in usr/lib."""
    usr = tmp_path / "root" / "usr"
    (usr / "lib" / "linux-kbuild-7.2.13+deb14" / "scripts").mkdir(parents=True)
    kbuild = usr / "src" / "linux-headers-7.2.13+deb14-amd64"
    kbuild.mkdir(parents=True)
    (kbuild / "scripts").symlink_to("../../lib/linux-kbuild-7.2.13+deb14/scripts")
    return kbuild


def test_kernel_tree(tmp_path: Path) -> None:
    kbuild = debian_tree(tmp_path)
    assert kernel_tree(kbuild) == (tmp_path / "root" / "usr").resolve()
    source = tmp_path / "linux"
    (source / "scripts").mkdir(parents=True)
    assert kernel_tree(source) == tmp_path.resolve()


def test_in_root_argv() -> None:
    argv = in_root_argv(Path("/r"), Path("/t"), Path("/s"), ["make", "modules"])
    assert argv[:6] == ["unshare", "--mount", "--propagation", "private", "sh", "-euc"]
    assert argv[7:] == ["in-toolchain-root", "/r", "/t", "/s", "make", "modules"]
    script = argv[6]
    assert 'mount -o remount,bind,ro "$root"' in script
    assert script.rstrip().endswith('exec chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin '
                                    'HOME=/ LC_ALL=C "$@"')


# ------------------------------------------------------------------------ toolchain_for, make

@pytest.fixture
def kbuild72(tmp_path: Path) -> Path:
    kbuild = debian_tree(tmp_path)
    (kbuild / ".kernelvariables").write_text(VARS_72_AMD64)
    return kbuild


def test_the_host_compiler_when_there(kbuild72: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "uname", lambda: _Uname("x86_64"))
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    tc = toolchain_for(kbuild72, "x86_64", "sid")
    assert tc == Toolchain("x86_64-linux-gnu-gcc-16")
    assert tc.identity == "host:x86_64-linux-gnu-gcc-16"
    arm = toolchain_for(kbuild72, "aarch64", None)
    assert arm.make_args == ("ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-")


def test_missing_compiler_errors(kbuild72: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "uname", lambda: _Uname("x86_64"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"x86_64-linux-gnu-gcc-16 is missing.*apt-get "
                                          r"install gcc-16"):
        toolchain_for(kbuild72, "x86_64", None)  # not a Debian kernel: only the host can build
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    wanted = (r"compiler x86_64-linux-gnu-gcc-16 \(sid\) is missing.*install gcc-16 from "
              r"Debian sid, or run as root")
    with pytest.raises(ConfigError, match=wanted) as err:
        toolchain_for(kbuild72, "x86_64", "sid")
    assert "\n" not in str(err.value)


def test_a_toolchain_root_when_the_host_lacks_it(kbuild72: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setattr(os, "uname", lambda: _Uname("x86_64"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    asked: list[Sequence[str]] = []

    def carried(packages: Sequence[str], arch: str) -> dict[str, frozenset[str]]:
        asked.append(packages)
        return parse_madison(MADISON, arch)

    made: list[tuple[Sequence[str], str]] = []

    def make_root(entry: Path, suites: Sequence[str], gcc: str, host_arch: str) -> None:
        made.append((suites, gcc))
        (entry / "root" / "usr" / "bin").mkdir(parents=True)
        (entry / "root" / "usr" / "bin" / "x86_64-linux-gnu-gcc-16").touch()

    monkeypatch.setattr(toolchain, "_carried", carried)
    monkeypatch.setattr(toolchain, "_make_root", make_root)
    tc = toolchain_for(kbuild72, "x86_64", "experimental")
    assert tc.root == tmp_path / "cache" / "toolchains" / "sid-gcc-16" / "root"
    assert tc.identity == "toolchains/sid-gcc-16:x86_64-linux-gnu-gcc-16"
    assert asked == [("gcc-16", "gcc-16-aarch64-linux-gnu")] and made == [(("sid",), "gcc-16")]
    # made once: the next kernel of sid finds it without asking apt
    assert toolchain_for(kbuild72, "x86_64", "sid") == tc
    assert len(asked) == 1 and len(made) == 1
    # a suite whose compiler Debian does not carry
    monkeypatch.setattr(toolchain, "_carried", lambda packages, arch: {})
    with pytest.raises(KernelError, match="no Debian suite of trixie or "
                                          "trixie\\+trixie-backports carries gcc-16"):
        toolchain_for(kbuild72, "x86_64", "trixie-backports")


def test_make_on_the_host_and_in_a_root(kbuild72: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[list[str]] = []
    def record(argv: list[str], **kw: object) -> str:
        runs.append(list(argv))
        return ""

    monkeypatch.setattr(hostcmd, "run", record)
    src = tmp_path / "src"
    src.mkdir()
    Toolchain("aarch64-linux-gnu-gcc-12", ("ARCH=arm64",)).make(
        ["-s", "modules"], kbuild_dir=kbuild72, src_dir=src, what="w", timeout=1)
    assert runs[-1] == ["make", "-C", str(kbuild72), f"M={src}", "ARCH=arm64", "-s", "modules"]
    rooted = Toolchain("x86_64-linux-gnu-gcc-16", root=Path("/r"), origin="toolchains/sid-gcc-16")
    rooted.make(["modules"], kbuild_dir=kbuild72, src_dir=src, what="w", timeout=1)
    tree = (tmp_path / "root" / "usr").resolve()
    assert runs[-1][7:] == ["in-toolchain-root", "/r", str(tree), str(src.resolve()), "make",
                            "-C", "/mnt/kernel/src/linux-headers-7.2.13+deb14-amd64",
                            "M=/mnt/src", "modules"]

    def fail(argv: Sequence[str], **kw: object) -> str:
        raise HostToolError("w failed (exit 2): /mnt/src/ih_attach.c:12:1: error: x | make: "
                            "*** [/mnt/kernel/src/Makefile:1] Error 2", "command was: ...")

    monkeypatch.setattr(hostcmd, "run", fail)
    with pytest.raises(HostToolError) as err:
        rooted.make(["modules"], kbuild_dir=kbuild72, src_dir=src, what="w", timeout=1)
    assert f"{src.resolve()}/ih_attach.c:12:1: error" in err.value.problem
    assert f"{tree}/src/Makefile" in err.value.problem
    assert "chrooted in /r" in err.value.fix


class _Uname:
    def __init__(self, machine: str) -> None:
        self.machine = machine


def test_propagation_private_where_root_is_a_visible_mount_unchanged_in_a_chroot() -> None:
    host = ("27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
            "22 27 0:21 / /proc rw,relatime - proc proc rw\n")
    chroot = ("45 27 0:40 / /proc rw,relatime - proc proc rw\n"
              "47 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw\n")
    assert propagation_for(host) == "private"
    assert propagation_for(chroot) == "unchanged"
    argv = mmdebstrap_argv(Path("/r"), ("sid",), ("gcc-16",), propagation="unchanged")
    assert argv[:4] == ["unshare", "--mount", "--propagation", "unchanged"]
    assert in_root_argv(Path("/r"), Path("/t"), Path("/s"), ["true"], "unchanged")[3] == \
        "unchanged"
