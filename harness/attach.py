"""Python API over the ih_attach module's control file (guest_modules/ih_attach.c).

Every operation returns the kernel's own return code (0 or -errno) as an :class:`OpResult`; a
batch of operations travels in one guest command and comes back as one result per operation.
"""

from __future__ import annotations

import errno
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import GuestError
from .guest import Guest
from .sysfs import IommuGroup

CTL = "/sys/kernel/debug/ih_attach/ctl"
DRIVER_DMA_API = "ih_edu"  # driver_managed_dma = false: an ordinary DMA-API driver
DRIVER_OWNED = "ih_edu_owned"  # driver_managed_dma = true, as VFIO


class ResultParseError(ValueError):
    pass


@dataclass(frozen=True)
class OpResult:
    op: str
    rc: int
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def guard(self) -> bool:
        """True when the module refused before calling the kernel (the call would WARN or
        corrupt state); the rc is then the module's, not the kernel's."""
        return self.get("guard") == "1"

    @property
    def errno_name(self) -> str:
        return "0" if self.rc == 0 else errno.errorcode.get(-self.rc, str(self.rc))

    def get(self, key: str) -> str | None:
        return dict(self.fields).get(key)


@dataclass(frozen=True)
class DeviceState:
    group: int | None
    domain: str  # "@handle" (ours), "default", "blocked", "identity", "unmanaged", "none"
    type: int
    driver: str | None


def parse_results(text: str) -> list[OpResult]:
    """Result lines "<op> <rc> [key=value ...]" (pure)."""
    results = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or not parts[1].lstrip("-").isdigit():
            raise ResultParseError(f"malformed result line {line!r}")
        fields = tuple(tuple(p.split("=", 1)) for p in parts[2:] if "=" in p)
        results.append(OpResult(parts[0], int(parts[1]), fields))  # type: ignore[arg-type]
    return results


def batch_script(lines: Iterable[str]) -> str:
    """The guest command that writes the lines to the control file and reads the results."""
    quoted = " ".join(shlex.quote(line) for line in lines)
    return f"printf '%s\\n' {quoted} > {CTL} && cat {CTL}"


class AttachCtl:
    """The control interface of one guest."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest

    def load(self) -> None:
        """Load ih_attach unless it is loaded; empty any stale results."""
        if self.guest.run("[ -e /sys/module/ih_attach ]").exit_code != 0:
            self.guest.load_module("ih_attach")
        self.guest.check(f"cat {CTL} > /dev/null")

    def unload(self) -> None:
        self.guest.unload_module("ih_attach")

    def batch(self, lines: Sequence[str], timeout: float = 120.0) -> list[OpResult]:
        """Run operations in one round trip; one result per non-blank line."""
        if not lines:
            return []
        out = self.guest.run(batch_script(lines), timeout)
        if out.exit_code != 0:
            raise GuestError(f"writing to {CTL} failed: {out.stderr.decode(errors='replace')}",
                             "is ih_attach loaded? (AttachCtl.load)")
        return parse_results(out.text)

    def op(self, line: str) -> OpResult:
        results = self.batch([line])
        if len(results) != 1:
            raise GuestError(f"{line!r} gave {len(results)} results", "see the control log")
        return results[0]

    def members(self, bdf: str) -> tuple[int, tuple[str, ...]] | None:
        """DEV's group id and its member devices as the kernel lists them, or None."""
        r = self.op(f"members {bdf}")
        if not r.ok:
            return None
        return int(r.get("group") or -1), tuple((r.get("devices") or "").split(","))

    def state(self, bdf: str) -> DeviceState:
        r = self.op(f"state {bdf}")
        group = int(r.get("group") or -1)
        driver = r.get("driver")
        return DeviceState(None if group < 0 else group, r.get("domain") or "?",
                           int(r.get("type") or -1), None if driver in (None, "-") else driver)


@dataclass(frozen=True)
class TegraClient:
    """One logical device made of several edu devices sharing one domain, as host1x and its
    clients share one (drivers/gpu/host1x/dev.c, drivers/gpu/drm/tegra/drm.c).

    ``attach`` uses iommu_attach_device for a member alone in its group and
    iommu_attach_group once per group holding several members: the API each case needs today.
    """

    ctl: AttachCtl
    handle: str
    members: tuple[str, ...]  # PCI addresses

    def setup(self) -> OpResult:
        return self.ctl.op(f"alloc {self.handle} {self.members[0]}")

    def map(self, iova: int = 0x100000, size: int = 0x1000) -> OpResult:
        """Map after attaching: an SMMUv3 domain has no page table before its first attach
        (arm_smmu_domain_finalise runs at attach), so iommu_map fails there with -ENODEV."""
        return self.ctl.op(f"map {self.handle} {iova:#x} {size:#x}")

    def attach(self, groups: Sequence[IommuGroup]) -> list[OpResult]:
        """``groups``: the guest's groups (Guest.groups()), to tell a member alone in its
        group from one that shares it (with other members or with any other device)."""
        group_of = {m.bdf: g.id for g in groups for m in g.members}
        sizes = {g.id: len(g.members) for g in groups}
        ops, seen = [], set()
        for bdf in self.members:
            gid = group_of[bdf]
            if sizes[gid] == 1:
                ops.append(f"attach_dev {self.handle} {bdf}")
            elif gid not in seen:
                ops.append(f"attach_group {self.handle} {bdf}")
            seen.add(gid)
        return self.ctl.batch(ops)

    def dma_from_each(self, iova: int = 0x100000, length: int = 64) -> list[OpResult]:
        return self.ctl.batch([f"dma {bdf} {self.handle} {iova:#x} {length}"
                               for bdf in self.members])
