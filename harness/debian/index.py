"""Debian's kernels as the archive lists them, and what a ``debian:`` spec resolves to (pure).

The input is the archive's own ``Packages`` indexes (deb822 stanzas, one per binary package
and suite); :func:`parse_packages` keeps the kernel packages, :func:`build_index` groups them
into kernels, and :func:`resolve` picks one for a spec. Nothing here reads the host's apt
state, so a spec means the same kernel on every host that sees the same archive.

Two package layouts exist (both handled):
- classic (6.x): ``linux-image-<abi>-<flavour>[-unsigned]`` carries the image, the modules and
  ``/boot/config-<release>``;
- split (7.x): ``linux-image-<abi>-<flavour>`` is a small package depending on
  ``linux-base-`` (config, System.map), ``linux-binary-`` (``vmlinuz``) and ``linux-modules-``,
  all under ``/usr/lib/modules/<release>``.
Either way the headers are ``linux-headers-<abi>-<flavour>``, which depends on
``linux-headers-<abi>-common`` and ``linux-kbuild-<...>`` (the host's own architecture).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError
from . import version as debver

# The suites the harness reads, most stable first: a kernel whose version several suites carry
# is said to come from the first (its toolchain is that suite's).
SUITES = ("bookworm", "bookworm-updates", "bookworm-security", "trixie", "trixie-updates",
          "trixie-security", "trixie-backports", "sid", "experimental")
ARCHES = ("amd64", "arm64")
Layout = Literal["classic", "split"]

# Stanza fields the index keeps, and the packages it keeps them for (a prefilter the I/O side
# applies to whole Packages files before parsing).
KERNEL_PACKAGE = re.compile(r"^linux-(?:image|headers|base|binary|modules|kbuild)-\d")
_IMAGE = re.compile(r"^linux-image-(?P<abi>\d+\.\d+[0-9.]*(?:-\d+)?(?:\+deb\d+)?)"
                    r"-(?P<flavour>amd64|arm64)(?P<unsigned>-unsigned)?$")


@dataclass(frozen=True)
class PackageRecord:
    name: str
    version: str
    arch: str  # amd64, arm64 or all
    suite: str
    depends: tuple[tuple[str, str], ...] = ()  # (name, version constraint or "")

    def key(self) -> tuple[str, str, str]:
        return self.name, self.version, self.arch


@dataclass(frozen=True)
class DebianKernel:
    """One Debian kernel build for one architecture, and the packages that make it up."""

    release: str  # uname -r: 6.1.0-56-amd64, 7.2.13+deb14-arm64, 7.3-amd64
    arch: str
    version: str  # the Debian version of its packages: 7.2.13-1, 7.3~rc7-1~exp1
    suite: str
    layout: Layout
    packages: tuple[str, ...]  # name:arch=version, ready for apt-get download

    @property
    def upstream(self) -> str:
        return debver.upstream(self.version)

    @property
    def series(self) -> str:
        return series_of(self.upstream)

    @property
    def rc(self) -> bool:
        return "~rc" in self.upstream

    def to_json(self) -> dict[str, object]:
        return {"release": self.release, "arch": self.arch, "version": self.version,
                "suite": self.suite, "layout": self.layout, "packages": list(self.packages)}

    @staticmethod
    def from_json(data: dict[str, object]) -> DebianKernel:
        layout = str(data["layout"])
        if layout not in ("classic", "split"):
            raise ValueError(f"bad layout {layout!r}")
        packages = data["packages"]
        assert isinstance(packages, list)
        return DebianKernel(release=str(data["release"]), arch=str(data["arch"]),
                            version=str(data["version"]), suite=str(data["suite"]),
                            layout="split" if layout == "split" else "classic",
                            packages=tuple(str(p) for p in packages))


def series_of(upstream: str) -> str:
    """``6.12.118`` → ``6.12``; ``7.3~rc7`` → ``7.3``."""
    return ".".join(re.split(r"[.~+-]", upstream)[:2])


# ---------------------------------------------------------------------------- parsing

def parse_depends(field: str) -> tuple[tuple[str, str], ...]:
    """``a (= 1), b (>= 2) | c`` → ((a, "= 1"), (b, ">= 2"), (c, "")): alternatives flattened,
    arch qualifiers dropped."""
    out = []
    for alternative in re.split(r"[,|]", field):
        m = re.match(r"\s*([a-z0-9][a-z0-9.+-]*)(?::\w+)?\s*(?:\(([^)]*)\))?", alternative)
        if m:
            out.append((m.group(1), " ".join((m.group(2) or "").split())))
    return tuple(out)


def parse_packages(text: str, suite: str) -> Iterator[PackageRecord]:
    """The kernel packages in one ``Packages`` file of ``suite``."""
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            if key in ("Package", "Version", "Architecture", "Depends"):
                fields[key] = value.strip()
        name = fields.get("Package", "")
        if not KERNEL_PACKAGE.match(name) or "Version" not in fields:
            continue
        yield PackageRecord(name=name, version=fields["Version"],
                            arch=fields.get("Architecture", ""), suite=suite,
                            depends=parse_depends(fields.get("Depends", "")))


# ---------------------------------------------------------------------------- the index

@dataclass(frozen=True)
class KernelIndex:
    kernels: tuple[DebianKernel, ...]  # newest first
    headerless: tuple[str, ...]  # "release (version, suite)" of images without headers

    def for_arch(self, arch: str) -> list[DebianKernel]:
        return [k for k in self.kernels if k.arch == arch]


class _Packages:
    """Records by name, for looking up what a kernel's packages depend on."""

    def __init__(self, records: Iterable[PackageRecord]) -> None:
        self.by_name: dict[str, list[PackageRecord]] = {}
        for r in records:
            self.by_name.setdefault(r.name, []).append(r)

    def find(self, name: str, constraint: str, arches: tuple[str, ...]) -> PackageRecord | None:
        """The newest record of ``name`` for one of ``arches`` that meets ``constraint``;
        for one version, the most stable suite."""
        found = [r for r in self.by_name.get(name, []) if r.arch in arches
                 and _satisfies(r.version, constraint)]
        if not found:
            return None
        newest = max(found, key=lambda r: debver.sort_key(r.version))
        same = [r for r in found if r.version == newest.version]
        return min(same, key=lambda r: _suite_rank(r.suite))


def _suite_rank(suite: str) -> int:
    return SUITES.index(suite) if suite in SUITES else len(SUITES)


def _satisfies(version: str, constraint: str) -> bool:
    if not constraint:
        return True
    op, _, wanted = constraint.partition(" ")
    c = debver.compare(version, wanted)
    return {"=": c == 0, ">=": c >= 0, "<=": c <= 0, ">>": c > 0, "<<": c < 0}.get(op, False)


def build_index(records: Iterable[PackageRecord], host_arch: str = "amd64") -> KernelIndex:
    """Group package records into kernels: an image package, the packages it needs (split
    layout) and its headers with their -common part and the host's linux-kbuild."""
    pkgs = _Packages(records)
    kernels: dict[tuple[str, str, str], DebianKernel] = {}
    headerless: list[str] = []
    for name, recs in pkgs.by_name.items():
        m = _IMAGE.match(name)
        if not m:
            continue
        for rec in recs:
            if rec.arch != m.group("flavour"):
                continue
            release = f"{m.group('abi')}-{m.group('flavour')}"
            key = (release, rec.arch, rec.version)
            kernel = _kernel(pkgs, rec, release, host_arch)
            if kernel is None:
                headerless.append(f"{release} ({rec.version}, {rec.suite})")
                continue
            # Prefer -unsigned (the same image without the signature) and the stable suite.
            old = kernels.get(key)
            if old is None or (m.group("unsigned") and "-unsigned" not in old.packages[0]) \
                    or _suite_rank(kernel.suite) < _suite_rank(old.suite):
                kernels[key] = kernel
    # Newest upstream first; for one upstream version built in several suites (a backport and
    # the original), the most stable suite first: its compiler is the one hosts have.
    ordered = sorted(kernels.values(), key=lambda k: (debver.sort_key(k.upstream),
                                                      -_suite_rank(k.suite),
                                                      debver.sort_key(k.version), k.arch),
                     reverse=True)
    return KernelIndex(kernels=tuple(ordered), headerless=tuple(sorted(set(headerless))))


def _kernel(pkgs: _Packages, image: PackageRecord, release: str,
            host_arch: str) -> DebianKernel | None:
    arch = image.arch
    parts = [image]
    split = [d for d in image.depends if re.match(r"linux-(base|binary|modules)-", d[0])]
    for dep, constraint in split:
        rec = pkgs.find(dep, constraint, (arch,))
        if rec is None:
            return None
        parts.append(rec)
    headers = pkgs.find(f"linux-headers-{release}", f"= {image.version}", (arch,))
    if headers is None:
        return None
    parts.append(headers)
    for dep, constraint in headers.depends:
        if dep.startswith("linux-headers-") and dep.endswith("-common"):
            rec = pkgs.find(dep, constraint, ("all", arch))
        elif dep.startswith("linux-kbuild-"):
            rec = pkgs.find(dep, constraint, (host_arch,))
        else:
            continue
        if rec is None:
            return None
        parts.append(rec)
    return DebianKernel(
        release=release, arch=arch, version=image.version,
        suite=min((r.suite for r in pkgs.by_name[image.name] if r.version == image.version
                   and r.arch == arch), key=_suite_rank),
        layout="split" if split else "classic",
        packages=tuple(f"{r.name}={r.version}" if r.arch == "all"
                       else f"{r.name}:{r.arch}={r.version}" for r in parts))


# ---------------------------------------------------------------------------- specs

SPECIAL = ("newest", "rc")


def parse_spec(spec: str) -> str:
    """``debian:7.2`` → ``7.2``; ``debian:newest``, ``debian:rc``; anything else is refused."""
    what = spec.removeprefix("debian:")
    if what in SPECIAL or re.fullmatch(r"\d+\.\d+", what):
        return what
    raise ConfigError(f"kernel spec {spec!r} is not a Debian kernel spec",
                      "use debian:<major.minor> (e.g. debian:6.12), debian:newest or debian:rc")


def resolve(spec: str, arch: str, index: KernelIndex) -> DebianKernel:
    """The kernel a ``debian:`` spec names for ``arch``: the newest released build of the
    series (``newest``: of any series; ``rc``: experimental's newest release candidate)."""
    what = parse_spec(spec)
    candidates = index.for_arch(arch)
    if what == "rc":
        chosen = [k for k in candidates if k.rc]
    elif what == "newest":
        chosen = [k for k in candidates if not k.rc]
    else:
        chosen = [k for k in candidates if k.series == what and not k.rc]
    if chosen:
        return chosen[0]
    exist = ", ".join(available_specs(index, arch)) or "none"
    noheaders = [h for h in index.headerless if h.endswith(f"-{arch}") or f"-{arch} (" in h]
    noheaders = [h for h in noheaders if what in SPECIAL or series_of(h) == what]
    if what == "rc":
        problem = f"no release candidate kernel for {arch} in experimental right now"
    elif noheaders:
        problem = f"Debian's {spec} kernel {noheaders[-1]} has no headers package"
    elif any(k.series == what and not k.rc for k in index.kernels):
        problem = f"Debian has no {arch} build of {spec}"
    else:
        problem = f"Debian has no {spec} kernel"
    raise ConfigError(problem, f"specs that exist for {arch}: {exist}")


def available_specs(index: KernelIndex, arch: str | None = None) -> list[str]:
    """Every spec that resolves now (for ``arch``, or any), series in version order."""
    kernels = index.kernels if arch is None else index.for_arch(arch)
    series = sorted({k.series for k in kernels if not k.rc},
                    key=lambda s: tuple(int(x) for x in s.split(".")))
    specs = [f"debian:{s}" for s in series]
    if any(not k.rc for k in kernels):
        specs.append("debian:newest")
    if any(k.rc for k in kernels):
        specs.append("debian:rc")
    return specs


def resolve_all(index: KernelIndex) -> list[tuple[str, dict[str, DebianKernel]]]:
    """Every spec that exists now, with what it resolves to per architecture."""
    out = []
    for spec in available_specs(index):
        per_arch = {}
        for arch in ARCHES:
            try:
                per_arch[arch] = resolve(spec, arch, index)
            except ConfigError:
                continue
        out.append((spec, per_arch))
    return out


def format_kernels(resolved: list[tuple[str, dict[str, DebianKernel]]]) -> str:
    """The ``kernels`` table: a row per spec, a column per architecture."""
    rows = [("spec", *(f"{a} (release, Debian version, suite)" for a in ARCHES))]
    for spec, per_arch in resolved:
        cells = []
        for arch in ARCHES:
            k = per_arch.get(arch)
            cells.append(f"{k.release} ({k.version}, {k.suite})" if k else "-")
        rows.append((spec, *cells))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)
