"""Building a kernel source tree in the cache → a :class:`KernelArtifact` (issue 12).

A tree is configured from the fragments in ``images/kconfig`` (:mod:`harness.kfragments`)
merged onto ``make tinyconfig`` with the tree's own ``merge_config.sh``, then built out of tree
(``O=``) under ``<cache>/kbuild/<build>/obj``, where ``<build>`` names the tree's location, the
architecture and the fragments' contents: a tree built again after a small change rebuilds
incrementally, and ccache (``<cache>/ccache``) makes a state seen before cheap to build again.
What a guest boots is copied out per tree state into ``<cache>/kbuild/<build>/states/<state>``:
the image, the config, Module.symvers and ``modules_install``'s tree, so a running guest never
sees a later build. A build whose tree state is the one last built costs nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import cache
from .artifact import KernelArtifact, check_kernel
from .errors import BuildError, ConfigError
from .kconfig import parse_config
from .kfragments import dropped, dropped_line, fragment_files, merged, parse_fragment
from .platforms import Platform
from .srctree import TreeState, check_tree, tree_state
from .toolchain import CROSS_COMPILE, DEBIAN_ARCH, KBUILD_ARCH
from .vmlinux import has_pvh_note

IMAGE_TARGET = {"x86_64": "bzImage", "aarch64": "Image"}
IMAGE_PATH = {"x86_64": "arch/x86/boot/bzImage", "aarch64": "arch/arm64/boot/Image"}
LOG_TAIL = 12  # lines of the build log in a failure's one-line error
PROGRESS_EVERY = 20.0  # seconds between progress lines
KEEP_STATES = 10  # outputs of the most recently built tree states kept per build folder


@dataclass(frozen=True)
class BuildPlan:
    """What to build: a tree, for an architecture, with fragments (pure data)."""

    tree: Path
    arch: str  # the platform's: x86_64 or aarch64
    fragments: tuple[Path, ...]
    jobs: int = max(1, os.cpu_count() or 1)

    @property
    def key(self) -> str:
        """Names the build folder: where the tree is, the arch, the fragments' contents."""
        return cache.digest([str(self.tree), self.arch,
                             *(f"{f.name}\0{f.read_text()}" for f in self.fragments)])

    def make_argv(self, obj: Path, *targets: str, host_arch: str | None = None) -> list[str]:
        """``make`` for this plan: out of tree, cross where needed, the compiler under ccache."""
        host = host_arch or os.uname().machine
        prefix = CROSS_COMPILE[self.arch] if self.arch != host else ""
        argv = ["make", "-C", str(self.tree), f"O={obj}", f"-j{self.jobs}",
                f"ARCH={KBUILD_ARCH[self.arch]}", f"CC=ccache {prefix}gcc", "HOSTCC=ccache gcc"]
        if prefix:
            argv.append(f"CROSS_COMPILE={prefix}")
        return [*argv, *targets]


def build_env(ccache_dir: Path) -> dict[str, str]:
    """The environment of a build: the user's, with our ccache and a fixed locale (so that
    compiler messages are parseable), and kbuild's timestamp pinned (reproducible images)."""
    env = dict(os.environ)
    env.setdefault("CCACHE_DIR", str(ccache_dir))
    env.update(LC_ALL="C", KBUILD_BUILD_TIMESTAMP="harness",
               KBUILD_BUILD_USER="harness", KBUILD_BUILD_HOST="harness")
    env.setdefault("CCACHE_MAXSIZE", "20G")
    return env


def progress_line(what: str, steps: int, elapsed: float) -> str:
    minutes, seconds = divmod(round(elapsed), 60)  # whole seconds first: 659.6 s is 11m00s
    return f"iommu-harness: {what}: {steps} steps, {minutes}m{seconds:02d}s"


def failure_summary(lines: Sequence[str], keep: int = LOG_TAIL) -> str:
    """The part of a build log a one-line error shows: the first compiler or linker errors,
    else the last lines (pure)."""
    errors = [ln.strip() for ln in lines if "error:" in ln.lower() or "undefined reference" in ln]
    shown = errors[:3] if errors else [ln.strip() for ln in lines[-keep:] if ln.strip()]
    return " | ".join(shown)


# --------------------------------------------------------------------------------- the builder

class SourceBuild:
    """One plan's folder in the cache and the steps that fill it."""

    def __init__(self, plan: BuildPlan) -> None:
        self.plan = plan
        self.folder = cache.cache_root() / "kbuild" / plan.key
        self.obj = self.folder / "obj"
        self.log = self.folder / "build.log"
        self.env = build_env(cache.cache_root() / "ccache")

    def states_dir(self, state: TreeState) -> Path:
        return self.folder / "states" / state.key

    def built_state(self) -> str:
        path = self.obj / ".harness-state"
        return path.read_text().strip() if path.is_file() else ""

    def ensure(self, state: TreeState) -> Path:
        """The folder of ``state``'s outputs, building first unless the last build was it."""
        out = self.states_dir(state)
        with cache.locked(self.folder / "build"):
            if out.is_dir() and self.built_state() == state.key:
                return out
            self.folder.mkdir(parents=True, exist_ok=True)
            self.obj.mkdir(exist_ok=True)
            (self.obj / ".harness-state").unlink(missing_ok=True)
            what = f"building {self.plan.tree} ({state.describe()}) for {self.plan.arch}"
            self._configure(what)
            self._make(what, IMAGE_TARGET[self.plan.arch], "modules")
            shutil.rmtree(out, ignore_errors=True)
            self._collect(out, state)
            (self.obj / ".harness-state").write_text(state.key + "\n")
        return out

    def headers(self) -> Path:
        """``make headers_install`` into the build folder (for selftests built from the
        tree): its ``usr/include``. Valid for the state built last."""
        self._run(self.plan.make_argv(self.obj, "headers_install"), "installing headers",
                  quiet=True)
        return self.obj / "usr" / "include"

    def _configure(self, what: str) -> None:
        """tinyconfig + fragments + olddefconfig in a side folder; the build's .config is
        replaced only when it differs, so an unchanged configuration rebuilds nothing."""
        conf = self.folder / "config"
        conf.mkdir(exist_ok=True)
        self._run(self.plan.make_argv(conf, "tinyconfig"), what, quiet=True)
        script = self.plan.tree / "scripts" / "kconfig" / "merge_config.sh"
        self._run([str(script), "-m", "-O", str(conf), str(conf / ".config"),
                   *map(str, self.plan.fragments)], what, quiet=True)
        self._run(self.plan.make_argv(conf, "olddefconfig"), what, quiet=True)
        new = (conf / ".config").read_bytes()
        current = self.obj / ".config"
        if not current.is_file() or current.read_bytes() != new:
            current.write_bytes(new)

    def dropped(self) -> list[str]:
        asked = merged(parse_fragment(f.read_text()) for f in self.plan.fragments)
        return dropped(asked, parse_config((self.obj / ".config").read_text()))

    def _make(self, what: str, *targets: str) -> None:
        self._run(self.plan.make_argv(self.obj, *targets), what)

    def _run(self, argv: Sequence[str], what: str, *, quiet: bool = False) -> None:
        """Run one build command, its output appended to build.log, a progress line on stderr
        every PROGRESS_EVERY seconds; a failure is a BuildError with the log's telling lines."""
        start = last = time.monotonic()
        tail: deque[str] = deque(maxlen=400)
        steps = 0
        with self.log.open("a") as log:
            log.write(f"$ {' '.join(argv)}\n")
            proc = subprocess.Popen(list(argv), cwd=self.plan.tree, env=self.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, errors="replace")
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    log.write(line)
                    tail.append(line.rstrip("\n"))
                    if line.startswith("  "):
                        steps += 1
                    now = time.monotonic()
                    if not quiet and now - last >= PROGRESS_EVERY:
                        print(progress_line(what, steps, now - start), file=sys.stderr,
                              flush=True)
                        last = now
                code = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if code != 0:
            raise BuildError(f"{what} failed (exit {code}): {failure_summary(list(tail))}",
                             f"the whole log is {self.log}", log="\n".join(tail))
        if not quiet:
            print(progress_line(what + " done", steps, time.monotonic() - start),
                  file=sys.stderr, flush=True)

    def _collect(self, out: Path, state: TreeState) -> None:
        """Copy what a guest boots and what module builds check into ``out``, atomically."""
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self._run(self.plan.make_argv(self.obj, "modules_install", f"INSTALL_MOD_PATH={tmp}",
                                      "INSTALL_MOD_STRIP=1"), "installing modules", quiet=True)
        shutil.copy2(self.obj / IMAGE_PATH[self.plan.arch], tmp / IMAGE_TARGET[self.plan.arch])
        shutil.copy2(self.obj / ".config", tmp / "config")
        shutil.copy2(self.obj / "Module.symvers", tmp / "Module.symvers")
        release = (self.obj / "include" / "config" / "kernel.release").read_text().strip()
        for link in ("build", "source"):
            (tmp / "lib" / "modules" / release / link).unlink(missing_ok=True)
        if self.plan.arch == "x86_64":
            shutil.copy2(self.obj / "vmlinux", tmp / "vmlinux")
        meta = {"tree": str(self.plan.tree), "state": state.key, "release": release,
                "arch": self.plan.arch, "fragments": [f.name for f in self.plan.fragments],
                "dropped": self.dropped(), "built": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (tmp / "build.json").write_text(json.dumps(meta, indent=1) + "\n")
        os.rename(tmp, out)
        self._prune(keep=out)

    def _prune(self, keep: Path) -> None:
        """Drop all but the KEEP_STATES most recently built states (a bisect builds many)."""
        states = sorted((p for p in (self.folder / "states").iterdir()
                         if p.is_dir() and not p.name.startswith(".")),
                        key=lambda p: p.stat().st_mtime, reverse=True)
        for old in states[KEEP_STATES:]:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------- the source

def source_kernel(spec: str, platform: Platform, kconfig: Sequence[str] = (),
                  notice: bool = True) -> KernelArtifact:
    """``--kernel DIR``: configure and build the tree (or find it built), check it fits the
    platform, and name what the tree dropped of the fragments in one line."""
    tree = check_tree(Path(spec))
    for tool in ("make", "ccache", "gcc", "flex", "bison", "bc"):
        if shutil.which(tool) is None:
            raise ConfigError(f"building a kernel tree needs {tool}, which is missing",
                              "run 'make deps' (images/host-packages.txt)")
    plan = BuildPlan(tree, platform.arch, tuple(fragment_files(platform.debian_arch, kconfig)))
    state = tree_state(tree)
    build = SourceBuild(plan)
    out = build.ensure(state)
    meta = json.loads((out / "build.json").read_text())
    if notice and meta["dropped"]:
        print(f"iommu-harness: {dropped_line(str(tree), meta['dropped'])}", file=sys.stderr)
    release = meta["release"]
    image = out / IMAGE_TARGET[platform.arch]
    vmlinux = out / "vmlinux"  # x86: QEMU enters it directly where it has the PVH note
    boot = vmlinux if vmlinux.is_file() and has_pvh_note(vmlinux.read_bytes()) else image
    artifact = KernelArtifact(
        spec=spec, release=release, debian_arch=DEBIAN_ARCH[platform.arch], image=image,
        boot_image=boot,
        config_path=out / "config", modules_dir=out / "lib" / "modules" / release,
        kbuild_dir=build.obj, build=f"{plan.key}:{state.key}",
        source=f"{tree} at {state.describe()}")
    check_kernel(artifact, platform)
    return artifact
