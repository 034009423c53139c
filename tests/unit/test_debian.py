"""Debian kernel resolution from recorded archive answers (no network), version ordering, and
the unpacked-tree fix-ups."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness import hostcmd
from harness.debian import apt
from harness.debian import version as debver
from harness.debian.index import (
    KernelIndex,
    PackageRecord,
    available_specs,
    build_index,
    format_kernels,
    parse_depends,
    parse_packages,
    resolve,
    resolve_all,
)
from harness.debian.layout import relocate_headers, usr_merge
from harness.errors import ConfigError, HostToolError, KernelError
from tests.conftest import DATA

APT_DATA = DATA / "apt"


def records(*drop: str) -> list[PackageRecord]:
    """The kernel stanzas of Debian's Packages files as fetched on 2026-12-03 (each suite, both
    architectures); ``drop``: leave out the files whose names start with these."""
    out: list[PackageRecord] = []
    for path in sorted(APT_DATA.glob("*_Packages")):
        if path.name.startswith(drop):
            continue
        suite = path.name.split("_")[0]
        out.extend(parse_packages(path.read_text(), suite))
    return out


INDEX = build_index(records())


@pytest.mark.parametrize(("a", "b", "want"), [
    ("6.12.118-1", "6.12.118-1~deb12u1", 1),  # ~ sorts before the end
    ("7.3~rc7-1~exp1", "7.3-1", -1),
    ("7.3~rc7-1~exp1", "7.2.13-1", 1),
    ("6.1.192-3", "6.1.176-1", 1),
    ("6.12.9-1", "6.12.10-1", -1),  # digit runs compare as numbers
    ("1:1.0-1", "2.0-1", 1),  # epoch first
    ("7.3.4-1~bpo13+1", "7.3.4-1", -1),
    ("1.0a-1", "1.0+-1", -1),  # letters before other characters
    ("1.0-1", "1.0-1", 0),
])
def test_versions_compare_as_dpkg_does(a: str, b: str, want: int) -> None:
    assert debver.compare(a, b) == want
    assert debver.compare(b, a) == -want


def test_depends_flattened_with_constraints() -> None:
    assert parse_depends("a (= 1.0-1), b:any (>= 2) | c, d") == (
        ("a", "= 1.0-1"), ("b", ">= 2"), ("c", ""), ("d", ""))


@pytest.mark.parametrize(("spec", "arch", "release", "version", "suite", "layout"), [
    ("debian:6.1", "amd64", "6.1.0-57-amd64", "6.1.192-3", "bookworm-security", "classic"),
    ("debian:6.1", "arm64", "6.1.0-57-arm64", "6.1.192-3", "bookworm-security", "classic"),
    # 6.12.118 is built in bookworm-security and trixie-security: the stable suite's build wins
    ("debian:6.12", "amd64", "6.12.118+deb12-amd64", "6.12.118-1~deb12u1",
     "bookworm-security", "classic"),
    ("debian:7.2", "amd64", "7.2.13+deb14-amd64", "7.2.13-1", "sid", "split"),
    ("debian:7.2", "arm64", "7.2.13+deb14-arm64", "7.2.13-1", "sid", "split"),
    ("debian:7.3", "arm64", "7.3.4+deb13-arm64", "7.3.4-1~bpo13+1", "trixie-backports", "split"),
    ("debian:newest", "amd64", "7.3.4+deb13-amd64", "7.3.4-1~bpo13+1", "trixie-backports",
     "split"),
    ("debian:rc", "amd64", "7.3-amd64", "7.3~rc7-1~exp1", "experimental", "split"),
])
def test_specs_resolve_from_the_archive(spec: str, arch: str, release: str, version: str,
                                        suite: str, layout: str) -> None:
    k = resolve(spec, arch, INDEX)
    assert (k.release, k.version, k.suite, k.layout) == (release, version, suite, layout)


def test_classic_kernel_packages_prefer_unsigned_and_the_hosts_kbuild() -> None:
    k = resolve("debian:6.1", "arm64", INDEX)
    assert k.packages == ("linux-image-6.1.0-57-arm64-unsigned:arm64=6.1.192-3",
                          "linux-headers-6.1.0-57-arm64:arm64=6.1.192-3",
                          "linux-headers-6.1.0-57-common=6.1.192-3",
                          "linux-kbuild-6.1:amd64=6.1.192-3")


def test_split_kernel_brings_base_binary_and_modules() -> None:
    k = resolve("debian:7.2", "arm64", INDEX)
    names = [p.split(":")[0].split("=")[0] for p in k.packages]
    assert names == ["linux-image-7.2.13+deb14-arm64", "linux-base-7.2.13+deb14-arm64",
                     "linux-binary-7.2.13+deb14-arm64", "linux-modules-7.2.13+deb14-arm64",
                     "linux-headers-7.2.13+deb14-arm64", "linux-headers-7.2.13+deb14-common",
                     "linux-kbuild-7.2.13+deb14"]
    assert k.packages[-1].startswith("linux-kbuild-7.2.13+deb14:amd64=")


def test_a_missing_arch_names_the_specs_that_exist() -> None:
    index = build_index(records("sid_arm64"))  # sid's arm64 build not there yet
    assert resolve("debian:7.2", "amd64", index).suite == "sid"
    assert resolve("debian:7.2", "arm64", index).release == "7.2.12+deb13-arm64"  # backport
    index = build_index(records("sid_arm64", "trixie-backports_arm64"))
    with pytest.raises(ConfigError, match=r"no arm64 build of debian:7.2 \(specs that exist "
                                          r"for arm64: debian:6.1, debian:6.12, debian:newest, "
                                          r"debian:rc\)"):
        resolve("debian:7.2", "arm64", index)


def test_a_kernel_without_headers_is_not_offered() -> None:
    recs = [r for r in records() if not r.name.startswith("linux-headers-7.3.4")]
    index = build_index(recs)
    with pytest.raises(ConfigError, match=r"debian:7.3 kernel 7.3.4\+deb13-amd64 "
                                          r"\(7.3.4-1~bpo13\+1, trixie-backports\) has no "
                                          r"headers package"):
        resolve("debian:7.3", "amd64", index)
    assert resolve("debian:newest", "amd64", index).release == "7.2.13+deb14-amd64"


def test_no_release_candidate_is_one_line() -> None:
    index = build_index(records("experimental"))
    with pytest.raises(ConfigError, match="no release candidate kernel for amd64"):
        resolve("debian:rc", "amd64", index)
    assert "debian:rc" not in available_specs(index)


@pytest.mark.parametrize("spec", ["debian:", "debian:latest", "debian:6", "debian:6.1.0"])
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"debian:<major\.minor>"):
        resolve(spec, "amd64", INDEX)


def test_unknown_series_lists_what_exists() -> None:
    with pytest.raises(ConfigError, match=r"no debian:5.10 kernel.*debian:6.1, debian:6.12, "
                                          r"debian:7.2, debian:7.3"):
        resolve("debian:5.10", "amd64", INDEX)


def test_kernels_table() -> None:
    table = format_kernels(resolve_all(INDEX))
    lines = table.splitlines()
    assert lines[0].startswith("spec")
    assert [line.split()[0] for line in lines[1:]] == [
        "debian:6.1", "debian:6.12", "debian:7.2", "debian:7.3", "debian:newest", "debian:rc"]
    assert "7.2.13+deb14-arm64 (7.2.13-1, sid)" in table


def test_empty_index_has_no_specs() -> None:
    assert available_specs(KernelIndex((), ())) == []


# ------------------------------------------------------------------ our apt configuration

def test_sources_name_every_suite_and_both_arches() -> None:
    text = apt.sources_list()
    assert "debian-security bookworm-security main" in text
    assert " sid main" in text and " experimental main" in text
    assert all("[arch=amd64,arm64 signed-by=" in line for line in text.splitlines())


def test_options_keep_apt_off_the_hosts_configuration(tmp_path: Path) -> None:
    opts = apt.apt_options(tmp_path)
    pairs = dict(o.split("=", 1) for o in opts[1::2])
    for key in ("Dir::Etc::sourcelist", "Dir::Etc::sourceparts", "Dir::State::Lists",
                "Dir::State::status", "Dir::Cache", "Dir::Etc::preferences"):
        assert pairs[key].startswith(str(tmp_path)), key


def _fail(*args: object, **kwargs: object) -> str:
    raise HostToolError("apt-get update failed (exit 100): Could not resolve 'deb.debian.org'")


def test_offline_reuses_the_last_lists_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("IOMMU_HARNESS_CACHE", str(tmp_path))
    root = tmp_path / "apt"
    root.mkdir()
    (root / f"index-v{apt.INDEX_FORMAT}.json").write_text("[]")
    (root / "updated").touch()
    old = time.time() - 48 * 3600
    os.utime(root / "updated", (old, old))
    monkeypatch.setattr(hostcmd, "run", _fail)
    assert apt.refresh() == root
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iommu-harness: offline: ")


def test_offline_with_nothing_cached_is_one_error(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOMMU_HARNESS_CACHE", str(tmp_path))
    monkeypatch.setattr(hostcmd, "run", _fail)
    with pytest.raises(KernelError, match="no earlier lists are cached"):
        apt.refresh()


def test_fresh_lists_are_not_fetched_again(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOMMU_HARNESS_CACHE", str(tmp_path))
    root = tmp_path / "apt"
    root.mkdir()
    (root / f"index-v{apt.INDEX_FORMAT}.json").write_text("[]")
    (root / "updated").touch()
    monkeypatch.setattr(hostcmd, "run", _fail)
    assert apt.refresh() == root  # no apt-get call, so no failure


# ------------------------------------------------------------------ unpacked trees

def test_usr_merge_moves_classic_paths_under_usr(tmp_path: Path) -> None:
    (tmp_path / "lib" / "modules" / "6.1.0-57-amd64").mkdir(parents=True)
    (tmp_path / "lib" / "modules" / "6.1.0-57-amd64" / "modules.order").write_text("x")
    (tmp_path / "usr" / "lib" / "modules" / "6.1.0-57-amd64").mkdir(parents=True)
    (tmp_path / "usr" / "lib" / "modules" / "6.1.0-57-amd64" / "vmlinuz").write_text("v")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "busybox").write_text("b")
    usr_merge(tmp_path)
    usr_merge(tmp_path)  # idempotent
    assert (tmp_path / "lib").is_symlink()
    assert (tmp_path / "lib/modules/6.1.0-57-amd64/modules.order").read_text() == "x"
    assert (tmp_path / "lib/modules/6.1.0-57-amd64/vmlinuz").read_text() == "v"
    assert (tmp_path / "usr/bin/busybox").read_text() == "b"


def test_headers_makefile_made_relative(tmp_path: Path) -> None:
    kbuild = tmp_path / "linux-headers-7.2.13+deb14-amd64"
    kbuild.mkdir()
    (kbuild / "Makefile").write_text(
        "KBUILD_OUTPUT=/usr/src/linux-headers-7.2.13+deb14-amd64\n"
        "include /usr/src/linux-headers-7.2.13+deb14-common/Makefile\n")
    relocate_headers(kbuild)
    relocate_headers(kbuild)
    text = (kbuild / "Makefile").read_text()
    assert "/usr/src" not in text
    assert text.startswith("KBUILD_OUTPUT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))\n")
    assert text.endswith(")/../linux-headers-7.2.13+deb14-common/Makefile\n")
