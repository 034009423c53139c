"""The model's VFIO group/container rules (harness/model/vfio.py), and the VFIO step's guest
script and answers, without a guest. Groups as the default topology forms them on VT-d."""

from __future__ import annotations

import subprocess

import pytest

from harness.model import DMA_API, NO_DRIVER, OWNED, Model, get_profile
from harness.model.core import EBUSY, EEXIST, EINVAL, EIO, ENODEV, ENOENT, EPERM
from harness.model.vfio import EBADF
from harness.steps import Step, VfioCall

E0, E1, BR, E2, E3 = "0000:00:03.0", "0000:00:04.0", "0000:00:02.0", "0000:01:01.0", \
    "0000:01:02.0"
GROUPS = {2: [E0], 3: [E1], 1: [BR, E2, E3]}
PROFILES = ("linux-6.1", "linux-6.12", "linux-7.2")


def model(profile: str, vfio: tuple[str, ...] = (E0,), **drivers: str) -> Model:
    d = {E0: OWNED, E1: OWNED, E2: OWNED, E3: OWNED, BR: NO_DRIVER}
    d.update({k.replace("_", ":"): v for k, v in drivers.items()})
    m = Model(get_profile(profile), False, GROUPS, d)
    m.state.vfio.bound = set(vfio)
    return m


def rcs(m: Model, *lines: str) -> list[int]:
    return [m.apply(line).rc for line in lines]


READY = ("vfio_container", f"vfio_group {E0}", f"vfio_set_container {E0}", "vfio_set_iommu",
         "vfio_map 0x100000 0x10000", f"vfio_device {E0}")


@pytest.mark.parametrize("profile", PROFILES)
def test_the_container_path_to_dma(profile: str) -> None:
    m = model(profile)
    assert rcs(m, *READY) == [0] * 6
    assert m.domain_of(E0) == "unmanaged"  # VFIO's type1 domain, as ih_attach reports it
    assert m.apply(f"vfio_dma {E0} 0x100000 0x100") .rc == 0
    fault = m.apply(f"vfio_dma_to {E0} 0x900000 0x40")
    assert (fault.rc, fault.fault) == (0, True)
    assert not m.apply(f"vfio_dma_to {E0} 0x100000 0x40").fault
    assert rcs(m, f"vfio_unset_container {E0}", f"vfio_close_device {E0}",
               f"vfio_unset_container {E0}") == [-EBUSY, 0, 0]
    assert m.domain_of(E0) == "default" and m.state.groups[2].owner is None
    assert not m.state.vfio.iommu  # the last group out took the backend and its mappings
    assert rcs(m, "vfio_map 0x100000 0x1000") == [-EINVAL]


def test_ordering_errors_are_the_kernels() -> None:
    m = model("linux-6.1")
    assert rcs(m, f"vfio_group {E1}", f"vfio_group {E2}") == [-ENOENT, -ENOENT]  # no vfio-pci
    assert rcs(m, f"vfio_group {E0}", f"vfio_group {E0}") == [0, -EBUSY]
    assert rcs(m, f"vfio_device {E0}", "vfio_container", "vfio_set_iommu") == \
        [-EINVAL, 0, -EINVAL]
    assert rcs(m, f"vfio_unset_container {E0}", f"vfio_set_container {E0}",
               f"vfio_set_container {E0}", "vfio_map 0x0 0x1000") == [-EINVAL, 0, -EINVAL,
                                                                        -EINVAL]
    assert rcs(m, "vfio_set_iommu", "vfio_set_iommu", "vfio_map 0x0 0x2000",
               "vfio_map 0x1000 0x1000") == [0, -EINVAL, 0, -EEXIST]


def test_the_helpers_own_refusals_are_guards() -> None:
    m = model("linux-6.1")
    for line in (f"vfio_status {E0}", f"vfio_set_container {E0}", "vfio_set_iommu",
                 f"vfio_dma {E0} 0x0 0x10", f"vfio_close_device {E0}", "vfio_close_container"):
        out = m.apply(line)
        assert (out.rc, out.guard) == (-EBADF, True), line
    assert rcs(m, *READY) == [0] * 6
    assert m.apply("vfio_container").guard and m.apply(f"vfio_device {E0}").guard
    assert (m.apply(f"vfio_close_group {E0}").rc, m.apply("vfio_close_container").rc) == \
        (-EBUSY, -EBUSY)


def test_viability_and_the_ownership_claim() -> None:
    m = model("linux-6.1", vfio=(E2,), **{E3.replace(":", "_"): DMA_API})
    assert rcs(m, "vfio_container", f"vfio_group {E2}", f"vfio_status {E2}",
               f"vfio_set_container {E2}") == [0, 0, -EPERM, -EPERM]
    m.apply(f"vfio_close_group {E2}")
    m2 = model("linux-6.1", vfio=(E2,))
    assert rcs(m2, "vfio_container", f"vfio_group {E2}", f"vfio_set_container {E2}",
               f"vfio_status {E2}") == [0, 0, 0, 0]  # in a container: viable
    assert m2.state.groups[1].owner == "vfio"
    assert rcs(m2, f"claim_group {E3} o", f"vfio_device {E3}") == [-EPERM, -ENODEV]


def test_a_kernel_domain_and_vfio_on_one_group() -> None:
    m = model("linux-6.1", vfio=(E0, E1))
    assert rcs(m, f"alloc d {E1}", f"attach_group d {E1}", "vfio_container",
               f"vfio_group {E1}", f"vfio_status {E1}", f"vfio_set_container {E1}") == \
        [0, 0, 0, 0, 0, -EBUSY]
    assert rcs(m, f"vfio_group {E0}", f"vfio_set_container {E0}", f"alloc e {E0}",
               f"attach_group e {E0}", "vfio_set_iommu", f"detach_group e {E0}",
               "vfio_set_iommu", f"attach_group e {E0}") == [0, 0, 0, 0, -EBUSY, 0, 0, -EBUSY]
    assert m.domain_of(E0) == "unmanaged"
    # the module's reset leaves VFIO's claim and mappings alone
    m.apply("vfio_map 0x100000 0x10000")
    m.apply("reset")
    assert m.state.groups[2].owner == "vfio" and m.state.groups[2].owner_cnt == 1
    assert any(k[0] == "vfio:type1" for k in m.state.maps)


def test_dma_through_another_domain_fails_and_faults() -> None:
    """raw_detach_group (no guard) takes VFIO's domain away: the group is back on its blocking
    domain and the helper's DMA neither comes back nor goes unnoticed."""
    m = model("linux-6.1")
    assert rcs(m, *READY) == [0] * 6
    m.state.groups[2].domain = "blocking"
    out = m.apply(f"vfio_dma {E0} 0x100000 0x100")
    assert (out.rc, out.fault) == (-EIO, True)


# ------------------------------------------------------------------------------- the step

BDFS = {"edu0": E0, "edu2": E2}


def test_a_vfio_line_is_a_vfio_step() -> None:
    step = Step.op("vfio_set_container edu0")
    assert isinstance(step.action, VfioCall) and step.action.kind == "vfio"


@pytest.mark.parametrize("line", ["vfio_container", "vfio_group edu0", "vfio_device edu2",
                                  "vfio_dma edu0 0x100000 0x100", "vfio_close_group edu2"])
def test_the_guest_script_parses_as_shell(line: str) -> None:
    script = VfioCall(line).script(BDFS)
    r = subprocess.run(["busybox", "sh", "-n", "-c", script], capture_output=True, text=True,
                       check=False)
    assert (r.returncode, r.stderr) == (0, "")
    if line.startswith(("vfio_group", "vfio_device", "vfio_close_group")):
        assert "iommu_group" in script  # the group number is found from the device
    assert "setsid ih-vfio serve /run/ih-vfio" in script


def test_answers() -> None:
    assert VfioCall("vfio_status edu0").answer("status 0 group=2 viable=1 container=0\n") == \
        (0, False)
    assert VfioCall("vfio_status edu0").answer("status 0 group=2 viable=0 container=0\n") == \
        (-EPERM, False)
    assert VfioCall("vfio_dma edu0 0x0 0x10").answer("dma 0 dev=x verified=0\n") == \
        (-EIO, False)
    assert VfioCall("vfio_dma edu0 0x0 0x10").answer("dma 0 dev=x verified=1\n") == (0, False)
    assert VfioCall("vfio_device edu0").answer("device -19 dev=x\n") == (-ENODEV, False)
    assert VfioCall("vfio_close_group edu0").answer("close_group -9 group=2 guard=1\n") == \
        (-EBADF, True)


@pytest.mark.parametrize("profile", PROFILES)
def test_a_raw_release_takes_vfios_claim_away(profile: str) -> None:
    """raw_release_group drops VFIO's ownership and domain; VFIO's own release then WARNs
    where the version checks the owner, and changes nothing."""
    m = model(profile)
    assert rcs(m, *READY, f"raw_release_group {E0}") == [0] * 7
    assert m.domain_of(E0) == "default" and m.state.groups[2].owner is None
    dma = m.apply(f"vfio_dma {E0} 0x100000 0x100")
    assert (dma.rc, dma.fault) == (-EIO, True)
    m.apply(f"vfio_close_device {E0}")
    closed = m.apply(f"vfio_close_group {E0}")
    assert (closed.rc, closed.warn) == (0, get_profile(profile).release_warn)
    assert m.domain_of(E0) == "default"


def test_map_and_unmap_rules_of_type1v2() -> None:
    m = model("linux-6.1")
    assert rcs(m, *READY[:4]) == [0] * 4
    assert rcs(m, "vfio_map 0x100000 0x0", "vfio_map 0x100800 0x1000",
               "vfio_map 0x100000 0x2000", "vfio_map 0x102000 0x2000") == [-EINVAL, -EINVAL, 0, 0]
    # an unmap may cover several mappings but not bisect one; unaligned or empty: -EINVAL
    assert rcs(m, "vfio_unmap 0x101000 0x1000", "vfio_unmap 0x100000 0x800",
               "vfio_unmap 0x100000 0x4000") == [-EINVAL, -EINVAL, 0]
    assert not [k for k in m.state.maps if k[0] == "vfio:type1"]
    assert m.apply(f"vfio_dma {E0} 0x100000 0x0").guard


def test_an_unbind_waits_for_the_device_to_close() -> None:
    m = model("linux-6.12")
    assert rcs(m, *READY, f"vfio_unbind {E0}", f"vfio_dma {E0} 0x100000 0x100") == [0] * 8
    assert E0 in m.state.vfio.bound and "vfio.unbind_waits" in m.hits  # still vfio-pci's
    assert rcs(m, f"vfio_close_device {E0}", f"vfio_device {E0}") == [0, -ENODEV]
    # the group's last VFIO device gone, the group left its container (its file stays open)
    assert m.state.drivers[E0] == NO_DRIVER and m.domain_of(E0) == "default"
    assert m.state.groups[2].owner is None and "vfio.last_device_gone" in m.hits
    assert rcs(m, f"vfio_close_group {E0}") == [0] and m.domain_of(E0) == "default"
    # a device nobody has open leaves at once; one not on vfio-pci is the helper's refusal
    m = model("linux-6.12", vfio=(E0, E1))
    assert rcs(m, f"vfio_unbind {E1}") == [0] and m.state.drivers[E1] == NO_DRIVER
    assert m.apply(f"vfio_unbind {E1}").guard
