"""The kinds of scenario step, each knowing how it runs on a guest and on the model.

A step is an action (an ih_attach operation, a write to a group's sysfs type, a driver bind,
or a read-only observation) and the checks its author wrote. On the guest an action is one
shell script whose output ``answer`` reads back as (rc, guard); on the model it is a call that
returns a :class:`Prediction`. A new kind of step (VFIO, hotplug) is one more class here with
the same three members, and one more entry in :data:`scenario.ACTION_PARSERS`.
"""

from __future__ import annotations

import enum
import errno
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from .attach import (
    DRIVER_DMA_API,
    DRIVER_OWNED,
    ResultParseError,
    batch_script,
    parse_results,
)
from .dmesg import Event
from .model import Model
from .model.build import model_bind

StepKind = Literal["op", "set_type", "bind", "observe", "vfio"]


class Via(enum.StrEnum):
    """How a bind reaches the driver core: the driver's ``bind`` file (bind_store returns the
    probe's error as is) or the bus's ``drivers_probe`` (drivers_probe_store turns any failure
    into -EINVAL): drivers/base/bus.c."""
    BIND = "bind"
    DRIVERS_PROBE = "drivers_probe"


class DriverChoice(enum.StrEnum):
    """The driver a scenario binds a test device to, by what matters to the model."""
    OWNED = "owned"  # ih_edu_owned: driver_managed_dma, as VFIO
    VFIO = "vfio"  # vfio-pci itself: owning, and the group gets its /dev/vfio/N
    DMA_API = "dma_api"  # ih_edu: an ordinary DMA-API driver
    NONE = "none"  # no driver


# The guest_modules/ih_edu.c driver behind each choice ("" unbinds).
DRIVER_NAMES: dict[DriverChoice, str] = {DriverChoice.OWNED: DRIVER_OWNED,
                                         DriverChoice.VFIO: "vfio-pci",
                                         DriverChoice.DMA_API: DRIVER_DMA_API,
                                         DriverChoice.NONE: ""}
def resolve(line: str, bdfs: Mapping[str, str]) -> str:
    """Device ids in an operation line become the PCI addresses the guest knows."""
    return " ".join(bdfs.get(w, w) for w in line.split())


def errno_text(rc: int | None) -> str:
    if rc is None:
        return "-"
    return "0" if rc == 0 else errno.errorcode.get(-rc, str(rc))


def bind_errno(stderr: str) -> int:
    """The errno behind a failed sysfs write, from the shell's strerror text."""
    for code, _name in errno.errorcode.items():
        if os.strerror(code).lower() in stderr.lower():
            return -code
    return -errno.EIO


# ------------------------------------------------------------------------------- the checks

T = TypeVar("T")


@dataclass(frozen=True)
class ByProfile(Generic[T]):
    """A value the author may give per model profile: ``default`` unless ``per_profile``
    names the profile."""
    default: T
    per_profile: tuple[tuple[str, T], ...] = ()

    def get(self, profile: str) -> T:
        return dict(self.per_profile).get(profile, self.default)


Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Checks:
    """What the author insists the kernel does, whatever the model says."""
    rc: ByProfile[int | None] = ByProfile(None)
    state: ByProfile[Pairs] = ByProfile(())  # device id → its domain
    types: ByProfile[Pairs] = ByProfile(())  # device id → its group's sysfs type
    events: ByProfile[tuple[str, ...]] = ByProfile(())  # kernel events that must appear


# ------------------------------------------------------------------------------- the actions

@dataclass(frozen=True)
class Prediction:
    """The model's answer to an action (states and types are read from the model after)."""
    rc: int | None
    guard: bool = False
    warn: str = ""  # the kernel WARNs here, in this function
    fault: bool = False  # the IOMMU reports a DMA fault here


@dataclass(frozen=True)
class Operation:
    """An ih_attach operation (guest_modules/ih_attach.c), device ids not yet resolved."""
    line: str
    kind: StepKind = field(default="op", init=False)

    @property
    def label(self) -> str:
        return self.line

    def script(self, bdfs: Mapping[str, str]) -> str:
        return batch_script([resolve(self.line, bdfs)])

    def answer(self, output: str) -> tuple[int | None, bool]:
        result = parse_results(output)[0]
        return result.rc, result.guard

    def on_model(self, model: Model, bdfs: Mapping[str, str]) -> Prediction:
        out = model.apply(resolve(self.line, bdfs))
        return Prediction(out.rc, out.guard, out.warn, out.fault)


VFIO_DIR = "/run/ih-vfio"
# Steps that are calls of the guest's VFIO user: vfio_<command> (the group and container
# interface; the helper's command is the rest) and iommufd_<command> (its own name there).
USER_SPACE_PREFIXES = ("vfio_", "iommufd_")
# ih-vfio's commands that name a group: the step names a device, the script finds its group.
VFIO_GROUP_COMMANDS = frozenset({"group", "status", "set_container", "unset_container",
                                 "close_group"})
VFIO_DEVICE_COMMANDS = frozenset({"device"})  # the group, then the device itself
# Start the guest's VFIO user once per guest (it keeps its fds from step to step), detached
# from the control shell, and wait for its FIFOs; start it again when it died (busybox's
# `kill -0 ""` succeeds, hence the test for the pid file first).
VFIO_START = (f"{{ [ -s {VFIO_DIR}/pid ] && kill -0 \"$(cat {VFIO_DIR}/pid)\" 2>/dev/null; }} "
              "|| { "
              f"rm -rf {VFIO_DIR}; setsid ih-vfio serve {VFIO_DIR} </dev/null >/dev/null 2>&1 & "
              f"for i in $(seq 200); do [ -s {VFIO_DIR}/pid ] && break; sleep 0.01; done; }}")
VFIO_REPLY_SECONDS = 30  # a call that has not answered by then: the helper is stuck


@dataclass(frozen=True)
class VfioCall:
    """A call of the guest's VFIO user (guest_modules/tools/ih-vfio.c): ``vfio_<command>
    ARGS`` or ``iommufd_<command> ARGS``, device ids not yet resolved; a vfio_ command on a
    group names one of its devices. The answer of ``vfio_status`` is 0 for a viable group and
    -EPERM for one that is not (what VFIO_GROUP_SET_CONTAINER's ownership claim would answer);
    of ``vfio_dma`` and ``iommufd_dma``, -EIO when the bytes did not come back."""
    line: str
    kind: StepKind = field(default="vfio", init=False)

    @property
    def label(self) -> str:
        return self.line

    def script(self, bdfs: Mapping[str, str]) -> str:
        command, *args = resolve(self.line, bdfs).removeprefix("vfio_").split()
        send = (f"echo \"$c\" > {VFIO_DIR}/cmd && if read -r -t {VFIO_REPLY_SECONDS} r < "
                f"{VFIO_DIR}/reply; then echo \"$r\"; else echo \"${{c%% *}} -62 guard=1 "
                "why=no_reply\"; fi")
        if command in VFIO_GROUP_COMMANDS | VFIO_DEVICE_COMMANDS and args:
            link = f"/sys/bus/pci/devices/{args[0]}/iommu_group"
            rest = args if command in VFIO_DEVICE_COMMANDS else args[1:]
            return (f"{VFIO_START}; g=$(basename \"$(readlink {link} 2>/dev/null)\"); "
                    f"if [ -z \"$g\" ]; then echo '{command} -19 guard=1 why=no_group'; "
                    f"else c=\"{command} $g {' '.join(rest)}\"; {send}; fi")
        return f"{VFIO_START}; c={shlex.quote(' '.join([command, *args]))}; {send}"

    def answer(self, output: str) -> tuple[int | None, bool]:
        results = parse_results(output)
        if not results:
            raise ResultParseError(f"ih-vfio gave no answer to {self.line!r}: {output[-200:]!r}")
        result = results[-1]
        if result.op == "status" and result.rc == 0:
            return (0 if result.get("viable") == "1" else -errno.EPERM), False
        if result.op in ("dma", "iommufd_dma") and result.rc == 0 \
                and result.get("verified") != "1":
            return -errno.EIO, False  # the bytes did not come back
        return result.rc, result.guard

    def on_model(self, model: Model, bdfs: Mapping[str, str]) -> Prediction:
        out = model.apply(resolve(self.line, bdfs))
        return Prediction(out.rc, out.guard, out.warn, out.fault)


@dataclass(frozen=True)
class TypeWrite:
    """A write to the device's group's sysfs ``type`` file (drivers/iommu/iommu.c:
    iommu_group_store_type), from the guest's shell. It outlives a module reset."""
    device: str
    request: str
    kind: StepKind = field(default="set_type", init=False)

    @property
    def label(self) -> str:
        return f"set_type {self.device} {self.request}"

    def script(self, bdfs: Mapping[str, str]) -> str:
        t = f"/sys/bus/pci/devices/{bdfs.get(self.device, self.device)}/iommu_group/type"
        return (f"if [ -e {t} ]; then (echo {shlex.quote(self.request)} > {t}) 2>&1 "
                "| tr -d '\\n'; else printf 'No such file or directory'; fi; echo")

    def answer(self, output: str) -> tuple[int | None, bool]:
        error = output.strip()
        return (bind_errno(error) if error else 0), False

    def on_model(self, model: Model, bdfs: Mapping[str, str]) -> Prediction:
        out = model.apply(resolve(self.label, bdfs))
        return Prediction(out.rc, out.guard, out.warn, out.fault)


def bind_script(bdf: str, choice: DriverChoice | str, via: Via | str = Via.BIND) -> str:
    """Unbind the device, then bind it (driver_override names the driver) through the
    driver's ``bind`` file or the bus's ``drivers_probe``."""
    d = f"/sys/bus/pci/devices/{bdf}"
    name = DRIVER_NAMES[DriverChoice(choice)]
    unbind = f"[ ! -e {d}/driver ] || echo {bdf} > {d}/driver/unbind"
    if not name:
        return f"echo > {d}/driver_override; {unbind}"
    target = f"/sys/bus/pci/drivers/{name}/bind" if Via(via) is Via.BIND else \
        "/sys/bus/pci/drivers_probe"
    return f"{unbind}; echo {name} > {d}/driver_override && echo {bdf} > {target}"


@dataclass(frozen=True)
class Bind:
    """Rebind devices, in order; the step's rc is the first failure."""
    drivers: tuple[tuple[str, DriverChoice], ...]
    via: Via = Via.BIND
    kind: StepKind = field(default="bind", init=False)

    @property
    def label(self) -> str:
        verb = "bind" if self.via is Via.BIND else "probe"
        return f"{verb} " + " ".join(f"{d}={k}" for d, k in self.drivers)

    def script(self, bdfs: Mapping[str, str]) -> str:
        # One line per device: the script's exit status and its error text.
        return "; ".join(f"e=$( ({bind_script(bdfs[d], k, self.via)}) 2>&1 >/dev/null); s=$?; "
                         f"printf '%s %s\\n' $s \"$(echo $e)\"" for d, k in self.drivers)

    def answer(self, output: str) -> tuple[int | None, bool]:
        for line in output.splitlines():
            status, _, error = line.partition(" ")
            if status != "0":
                return bind_errno(error), False
        return 0, False

    def on_model(self, model: Model, bdfs: Mapping[str, str]) -> Prediction:
        rc = 0
        for device, choice in self.drivers:
            rc = rc or model_bind(model, bdfs[device], choice, self.via)
        return Prediction(rc)


@dataclass(frozen=True)
class Observe:
    """Nothing happens: the step only reads the devices' domains and group types, so a
    scenario can assert a state (e.g. "no group yet") without calling anything."""
    kind: StepKind = field(default="observe", init=False)

    @property
    def label(self) -> str:
        return "observe"

    def script(self, bdfs: Mapping[str, str]) -> str:
        return "true"

    def answer(self, output: str) -> tuple[int | None, bool]:
        return None, False

    def on_model(self, model: Model, bdfs: Mapping[str, str]) -> Prediction:
        return Prediction(None)


Action = Operation | TypeWrite | Bind | Observe | VfioCall


@dataclass(frozen=True)
class Step:
    action: Action
    checks: Checks = Checks()
    note: str = ""

    @property
    def label(self) -> str:
        return self.action.label

    @classmethod
    def op(cls, line: str) -> Step:
        """A step of one operation line and no checks: a write to the group's sysfs type
        (``set_type DEV TYPE``, from the guest's shell) or an ih_attach operation."""
        name, *words = line.split()
        if name == "set_type" and len(words) == 2:
            return cls(TypeWrite(words[0], words[1]))
        if name.startswith(USER_SPACE_PREFIXES):
            return cls(VfioCall(line))
        return cls(Operation(line))


@dataclass(frozen=True)
class Observation:
    """What the guest showed after a step: the answer, every device's domain and group type,
    and the kernel events the step logged."""
    rc: int | None
    guard: bool
    states: Pairs
    types: Pairs
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class ModelView:
    """The model's side of a step: its answer, then every device's domain and group type."""
    prediction: Prediction
    states: Pairs
    types: Pairs
    also: tuple[int | None, ...] = ()  # the answer under each --also-profile model
