"""The harness's own apt configuration: which kernels Debian has, and fetching their packages.

apt runs with a sources list, lists folder, package cache and (empty) dpkg status of our own
under the cache (``<cache>/apt``), for both architectures, so the host's sources, pinning and
installed packages never change what a spec means: a Debian 12 and a Debian 13 host resolve
``debian:6.1`` to the same kernel. Nothing here edits or reads the host's apt configuration.

The lists are refreshed when older than ``$IOMMU_HARNESS_APT_MAX_AGE`` hours (default 12: a
nightly run sees tonight's kernel). Without network the last lists are reused and the harness
says so in one line; with neither, the error says what to do.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .. import cache, hostcmd
from ..errors import HostToolError, KernelError
from .index import (
    ARCHES,
    SUITES,
    DebianKernel,
    KernelIndex,
    PackageRecord,
    build_index,
    parse_packages,
)

MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
ENV_MAX_AGE = "IOMMU_HARNESS_APT_MAX_AGE"
APT_HELPER = "/usr/lib/apt/apt-helper"
INDEX_FORMAT = 1  # bump when what index.json holds changes


def apt_root() -> Path:
    return cache.cache_root() / "apt"


def suite_mirror(suite: str) -> str:
    """Where a suite lives: security updates on their own archive."""
    return SECURITY_MIRROR if suite.endswith("-security") else MIRROR


def sources_list() -> str:
    """Our sources: every suite of :data:`SUITES`, main only, both architectures."""
    return "".join(f"deb [arch={','.join(ARCHES)} signed-by={KEYRING}] {suite_mirror(suite)} "
                   f"{suite} main\n" for suite in SUITES)


# Signatures are checked; a Release file's Valid-Until date is not. Mirrors, caching proxies and
# snapshot mirrors (this workplace's among them) serve Release files past that date, and the
# packages only go into the cache, guests and toolchain roots, never onto the host. Ours, so a
# host's own apt settings change nothing.
ACQUIRE_OPTIONS = {"Acquire::Check-Valid-Until": "false", "Acquire::Check-Date": "false"}


def apt_options(root: Path) -> list[str]:
    """``-o`` options that make apt-get and apt-cache use only our configuration."""
    opts = {
        "Dir::Etc::sourcelist": root / "sources.list",
        "Dir::Etc::sourceparts": root / "sources.list.d",
        "Dir::Etc::preferences": root / "preferences",
        "Dir::Etc::preferencesparts": root / "preferences.d",
        "Dir::State::Lists": root / "lists",
        "Dir::State::status": root / "status",
        "Dir::Cache": root / "cache",
        "Acquire::Languages": "none",
        "APT::Sandbox::User": "root" if os.geteuid() == 0 else "",
        **ACQUIRE_OPTIONS,
    }
    argv = []
    for key, value in opts.items():
        if value != "":
            argv += ["-o", f"{key}={value}"]
    argv += ["-o", "APT::Architectures::=amd64", "-o", "APT::Architectures::=arm64"]
    return argv


def _prepare(root: Path) -> None:
    for sub in ("lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, text in (("sources.list", sources_list()), ("preferences", ""), ("status", "")):
        path = root / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)


def _lists_age(root: Path) -> float | None:
    stamp = root / "updated"
    return time.time() - stamp.stat().st_mtime if stamp.is_file() else None


def _max_age() -> float:
    raw = os.environ.get(ENV_MAX_AGE, "12")
    try:
        return float(raw) * 3600
    except ValueError:
        raise KernelError(f"{ENV_MAX_AGE}={raw!r} is not a number of hours",
                          f"set {ENV_MAX_AGE} to e.g. 12, or unset it") from None


def notice(text: str) -> None:
    print(f"iommu-harness: {text}", file=sys.stderr, flush=True)


def refresh(*, force: bool = False) -> Path:
    """Bring our lists up to date (when old, or ``force``); return the apt root. Offline with
    lists in hand: keep them and say so; with none: :class:`KernelError`."""
    root = apt_root()
    with cache.locked(root / "update"):
        _prepare(root)
        age = _lists_age(root)
        if not force and age is not None and age < _max_age() and _index_file(root).is_file():
            return root
        try:
            hostcmd.run(["apt-get", *apt_options(root), "-q", "update"],
                        what="apt-get update (the harness's own Debian lists)", timeout=300)
        except HostToolError as exc:
            if age is None:
                raise KernelError("cannot reach Debian's archive to learn which kernels exist, "
                                  "and no earlier lists are cached",
                                  f"connect to {MIRROR}, or pass --kernel PATH "
                                  f"({exc.problem})") from exc
            notice(f"offline: Debian's archive did not answer; using the kernel lists of "
                   f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(time.time() - age))}")
            return root
        _write_index(root)
        (root / "updated").touch()
    return root


def _index_file(root: Path) -> Path:
    return root / f"index-v{INDEX_FORMAT}.json"


def _packages_files(root: Path) -> list[tuple[str, Path]]:
    """(suite, file) for every Packages file apt fetched for our sources."""
    out = []
    for path in sorted((root / "lists").glob("*_main_binary-*_Packages*")):
        name = path.name.split("_dists_", 1)[-1]
        suite = name.split("_main_", 1)[0]
        if suite in SUITES:
            out.append((suite, path))
    return out


def _read_packages(path: Path) -> str:
    """A Packages file as apt stores it (lz4, gz, xz or plain), decompressed by apt itself."""
    data = subprocess.run([APT_HELPER, "cat-file", str(path)], capture_output=True, check=True,
                          stdin=subprocess.DEVNULL).stdout
    return data.decode(errors="replace")


def _write_index(root: Path) -> None:
    records: dict[tuple[str, str, str, str], PackageRecord] = {}
    for suite, path in _packages_files(root):
        for rec in parse_packages(_prefilter(_read_packages(path)), suite):
            records[(*rec.key(), rec.suite)] = rec
    payload = [{"name": r.name, "version": r.version, "arch": r.arch, "suite": r.suite,
                "depends": [list(d) for d in r.depends]} for r in records.values()]
    tmp = _index_file(root).with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, _index_file(root))


def _prefilter(text: str) -> str:
    """Only the stanzas of kernel packages (a Packages file is 50-65 MB; they are ~1%)."""
    keep = []
    start = 0
    marker = "Package: linux-"
    while True:
        i = text.find(marker, start)
        if i < 0:
            break
        end = text.find("\n\n", i)
        end = len(text) if end < 0 else end
        keep.append(text[i:end])
        start = end
    return "\n\n".join(keep)


def load_records(root: Path) -> list[PackageRecord]:
    try:
        payload = json.loads(_index_file(root).read_text())
    except (OSError, ValueError) as exc:
        raise KernelError("the harness's Debian kernel index is missing or damaged",
                          "run 'iommu-harness kernels --refresh'") from exc
    return [PackageRecord(name=p["name"], version=p["version"], arch=p["arch"],
                          suite=p["suite"], depends=tuple((d[0], d[1]) for d in p["depends"]))
            for p in payload]


@functools.cache
def host_arch() -> str:
    """The host's Debian architecture (asked once: every kernel resolution needs it)."""
    return hostcmd.run(["dpkg", "--print-architecture"], what="dpkg").strip()


def kernel_index(*, force: bool = False) -> KernelIndex:
    """Every Debian kernel our suites carry, refreshed as :func:`refresh` decides."""
    root = refresh(force=force)
    return build_index(load_records(root), host_arch=host_arch())


def download(kernel: DebianKernel, dest: Path) -> None:
    """Fetch a kernel's packages (exact versions) into ``dest`` with our apt configuration."""
    download_packages(kernel.packages, dest, f"{kernel.release} ({kernel.version})")


def download_packages(packages: Sequence[str], dest: Path, what: str) -> None:
    """``apt-get download`` with our configuration (``name:arch=version`` or
    ``name:arch/suite``); the lists are fetched first if there are none yet."""
    root = apt_root()
    if not _index_file(root).is_file():
        refresh()
    _prepare(root)
    hostcmd.run(["apt-get", *apt_options(root), "-q", "download", *packages],
                cwd=dest, what=f"apt-get download of {what}", timeout=900)
