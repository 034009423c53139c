"""Choosing the accelerator: KVM only after a bounded probe proves a guest reaches Linux with it.

On some hosts /dev/kvm opens and KVM_CREATE_VM succeeds, yet QEMU aborts ("failed to set MSR")
or the guest spins in firmware forever. The probe boots the real kernel with KVM for a few
seconds and waits for the kernel's banner on the console; its verdict is cached per host, QEMU
and platform, so the cost is paid once.
"""

from __future__ import annotations

import json
import os
import platform as pyplatform
import select
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import cache
from .errors import AccelError, ConfigError
from .platforms import Platform
from .qemu import _die_with_parent

ACCELS = ("auto", "kvm", "tcg")
PROBE_SECONDS = 20.0
BANNER = b"Linux version "


@dataclass(frozen=True)
class Verdict:
    works: bool
    reason: str


def kvm_device_usable(platform: Platform) -> str:
    """Empty if /dev/kvm can host this platform, else why not."""
    if pyplatform.machine() != platform.kvm_capable_host_arch:
        return f"{platform.name} cannot use KVM on a {pyplatform.machine()} host"
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user"
    return ""


def probe_argv(platform: Platform, kernel: Path) -> list[str]:
    return [platform.qemu_binary, "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-M", platform.machine, "-accel", "kvm", "-cpu", platform.cpu_kvm,
            "-m", "256", "-kernel", str(kernel), "-append",
            f"console={platform.console} panic=-1", "-serial", "stdio"]


def probe_kvm(platform: Platform, kernel: Path, seconds: float = PROBE_SECONDS) -> Verdict:
    """Boot ``kernel`` under KVM until its banner appears, QEMU exits, or time runs out."""
    parent = os.getpid()
    proc = subprocess.Popen(probe_argv(platform, kernel), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True,
                            preexec_fn=lambda: _die_with_parent(parent))  # noqa: PLW1509
    assert proc.stdout is not None
    seen = b""
    end = time.monotonic() + seconds
    try:
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if not ready:
                break
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                tail = seen.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
                return Verdict(False, f"QEMU exited with KVM: {tail[0][:200]}")
            seen = (seen + chunk)[-65536:]
            if BANNER in seen:
                return Verdict(True, "a KVM guest reached Linux")
        return Verdict(False, f"a KVM guest did not reach Linux within {seconds:.0f}s")
    finally:
        proc.kill()
        proc.wait()


def _verdict_path(platform: Platform) -> Path:
    qemu = subprocess.run([platform.qemu_binary, "--version"], capture_output=True, text=True,
                          check=False).stdout.splitlines()[:1]
    key = cache.digest([platform.name, os.uname().release, *qemu, _cpu_model()])
    return cache.cache_root() / "accel" / f"kvm-{platform.name}-{key}.json"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return pyplatform.processor()


def kvm_verdict(platform: Platform, kernel: Path) -> Verdict:
    path = _verdict_path(platform)
    if path.exists():
        return Verdict(**json.loads(path.read_text()))
    verdict = probe_kvm(platform, kernel)
    path.parent.mkdir(parents=True, exist_ok=True)
    cache.ensure_file(path, lambda tmp: tmp.write_text(json.dumps(asdict(verdict))))
    return verdict


def choose_accel(request: str, platform: Platform, kernel: Path) -> str:
    """Resolve ``--accel auto|kvm|tcg`` to what QEMU gets: ``kvm`` or ``tcg``."""
    if request not in ACCELS:
        raise ConfigError(f"unknown accelerator {request!r}", f"use one of {', '.join(ACCELS)}")
    if request == "tcg":
        return "tcg"
    unusable = kvm_device_usable(platform)
    if unusable:
        if request == "kvm":
            raise AccelError(f"KVM requested but {unusable}", "use --accel tcg or auto")
        return "tcg"
    verdict = kvm_verdict(platform, kernel)
    if verdict.works:
        return "kvm"
    if request == "kvm":
        raise AccelError(f"KVM does not work on this host: {verdict.reason}",
                         "use --accel tcg or auto (the verdict is cached; delete "
                         f"{_verdict_path(platform)} to probe again)")
    return "tcg"
