"""The model's iommufd and VFIO-cdev rules (harness/model/iommufd.py), the fuzzer's alphabet
for a kernel with iommufd, and the step's answers, without a guest. Groups as the default
topology forms them on VT-d."""

from __future__ import annotations

import pytest

from harness.fuzz import IOMMUFD_TEMPLATES, TEMPLATES, templates_for
from harness.model import DMA_API, Model
from harness.model.core import EBUSY, EEXIST, EINVAL, EIO, ENOENT, EPERM
from harness.model.iommufd import EBADF
from harness.steps import Step, VfioCall
from tests.unit.test_model_vfio import E0, E1, E2, E3, rcs
from tests.unit.test_model_vfio import model as vfio_model

WITH_CDEV = ("linux-6.12", "linux-7.2")


def model(profile: str = "linux-7.2", vfio: tuple[str, ...] = (E0,), **drivers: str) -> Model:
    return vfio_model(profile, vfio, **drivers)


READY = ("iommufd_open", "iommufd_ioas a", "iommufd_ioas b", "iommufd_map a 0x100000 0x10000",
         "iommufd_map b 0x100000 0x10000", f"iommufd_bind {E0}")


@pytest.mark.parametrize("profile", WITH_CDEV)
def test_bind_attach_replace_and_dma(profile: str) -> None:
    m = model(profile)
    assert rcs(m, *READY) == [0] * 6
    g = m.state.groups[2]
    assert (g.owner, g.owner_cnt, m.domain_of(E0)) == ("iommufd", 1, "blocked")
    assert rcs(m, f"iommufd_attach {E0} a", f"iommufd_dma {E0} 0x100000 0x100") == [0, 0]
    assert m.domain_of(E0) == "unmanaged"
    # a replace moves the device; its DMA now goes through b's mappings
    assert rcs(m, f"iommufd_attach {E0} b") == [0] and "iommufd.replace" in m.hits
    assert m.state.iommufd.devices[E0] == "b"
    assert rcs(m, f"iommufd_dma {E0} 0x100000 0x100", "iommufd_destroy b") == [0, -EBUSY]
    assert rcs(m, f"iommufd_detach {E0}", f"iommufd_detach {E0}") == [0, 0]
    assert m.domain_of(E0) == "blocked"
    assert rcs(m, f"iommufd_unbind {E0}", "iommufd_close") == [0, 0]
    assert (g.owner, g.owner_cnt, m.domain_of(E0)) == (None, 0, "default")


def test_a_hwpt_maps_what_its_ioas_maps() -> None:
    m = model()
    assert rcs(m, *READY, f"iommufd_hwpt h {E0} a", f"iommufd_attach {E0} h",
               f"iommufd_dma {E0} 0x100000 0x100") == [0] * 9
    assert rcs(m, "iommufd_destroy a", "iommufd_destroy h") == [-EBUSY, -EBUSY]
    # unmapped under the HWPT: the helper refuses (it has no buffer there)
    assert m.apply(f"iommufd_dma {E0} 0x300000 0x100").guard


def test_the_group_path_and_the_cdev_exclude_each_other() -> None:
    m = model()
    assert rcs(m, "iommufd_open", f"vfio_group {E0}", f"iommufd_bind {E0}") == [0, 0, -EBUSY]
    assert rcs(m, f"vfio_close_group {E0}", f"iommufd_bind {E0}", f"vfio_group {E0}") == \
        [0, 0, -EBUSY]
    assert rcs(m, f"iommufd_bind {E1}") == [-ENOENT]  # not on vfio-pci: no cdev


def test_a_kernel_domain_blocks_the_first_attach_only() -> None:
    m = model()
    assert rcs(m, *READY, f"alloc d {E0}", f"attach_group d {E0}",
               f"iommufd_attach {E0} a") == [0] * 8 + [-EBUSY]
    assert rcs(m, f"detach_group d {E0}", f"iommufd_attach {E0} a",
               f"attach_group d {E0}", f"claim_dev {E0} o") == [0, 0, -EBUSY, -EPERM]


def test_a_group_has_one_page_table() -> None:
    m = model(vfio=(E2, E3))
    assert rcs(m, "iommufd_open", "iommufd_ioas a", "iommufd_ioas b",
               "iommufd_map a 0x100000 0x10000", "iommufd_map b 0x100000 0x10000",
               f"iommufd_bind {E2}", f"iommufd_bind {E3}") == [0] * 7
    assert m.state.groups[1].owner_cnt == 2  # the same owner counts up
    assert rcs(m, f"iommufd_attach {E2} a", f"iommufd_attach {E3} b",
               f"iommufd_attach {E3} a") == [0, -EINVAL, 0]
    assert rcs(m, f"iommufd_attach {E2} b", f"iommufd_dma {E3} 0x100000 0x100") == [0, 0]
    assert m.state.iommufd.devices == {E2: "b", E3: "b"}  # the whole group moved
    assert rcs(m, f"iommufd_detach {E2}") == [0] and m.domain_of(E3) == "unmanaged"
    assert rcs(m, f"iommufd_detach {E3}") == [0] and m.domain_of(E3) == "blocked"
    assert rcs(m, f"iommufd_unbind {E3}", f"iommufd_unbind {E2}") == [0, 0]
    assert m.domain_of(E2) == "default"


def test_a_dma_api_driver_in_the_group_refuses_the_bind() -> None:
    m = model(vfio=(E2,), **{E3.replace(":", "_"): DMA_API})
    assert rcs(m, "iommufd_open", f"iommufd_bind {E2}") == [0, -EPERM]


def test_ioas_mappings() -> None:
    m = model()
    assert rcs(m, "iommufd_open", "iommufd_ioas a", "iommufd_map a 0x100000 0x10000",
               "iommufd_map a 0x108000 0x1000", "iommufd_unmap a 0x100000 0x8000",
               "iommufd_unmap a 0x400000 0x1000", "iommufd_unmap a 0x0 0x200000") == \
        [0, 0, 0, -EEXIST, -ENOENT, -ENOENT, 0]  # nothing unmapped is ENOENT (the fuzzer)
    assert not m.state.maps
    out = m.apply("iommufd_map a 0x100 0x1000")
    assert (out.rc, out.guard) == (-EINVAL, True)  # the helper maps whole pages only


def test_a_raw_release_takes_iommufds_claim_away() -> None:
    m = model()
    assert rcs(m, *READY, f"iommufd_attach {E0} a", f"raw_release_group {E0}") == [0] * 8
    assert m.domain_of(E0) == "default"  # behind user space's back
    out = m.apply(f"iommufd_dma {E0} 0x100000 0x100")
    assert (out.rc, out.fault) == (-EIO, True)  # the default domain does not map the IOVA
    out = m.apply(f"iommufd_unbind {E0}")
    assert (out.rc, out.warn) == (0, "__iommu_release_dma_ownership")  # nobody owns it now


def test_helper_refusals() -> None:
    m = model()
    for line in (f"iommufd_bind {E0}", "iommufd_ioas a", "iommufd_close", "iommufd_destroy a",
                 f"iommufd_attach {E0} a", f"iommufd_detach {E0}", f"iommufd_unbind {E0}"):
        out = m.apply(line)
        assert (out.rc, out.guard) == (-EBADF, True), line
    assert rcs(m, *READY) == [0] * 6
    assert m.apply("iommufd_close").guard  # a device is bound
    assert m.apply("iommufd_open").guard and m.apply("iommufd_ioas a").guard


def test_6_1_has_no_iommufd() -> None:
    m = model("linux-6.1")
    assert rcs(m, "iommufd_open") == [-ENOENT] and "iommufd.none" in m.hits


def test_the_step_reads_the_helpers_answers() -> None:
    step = Step.op(f"iommufd_dma {E0} 0x100000 0x100")
    assert isinstance(step.action, VfioCall)
    assert step.action.answer("iommufd_dma 0 dev=x verified=1\n") == (0, False)
    assert step.action.answer("iommufd_dma 0 dev=x verified=0\n") == (-EIO, False)
    script = Step.op("iommufd_attach edu0 a").action.script({"edu0": E0})
    assert f"iommufd_attach {E0} a" in script and "iommufd_iommufd" not in script


def test_the_fuzzer_draws_iommufd_only_where_the_kernel_has_it() -> None:
    assert templates_for({"CONFIG_IOMMUFD": "m"}) == TEMPLATES
    full = templates_for({"CONFIG_IOMMUFD": "m", "CONFIG_VFIO_DEVICE_CDEV": "y"})
    assert full[:len(TEMPLATES)] == TEMPLATES and set(full[len(TEMPLATES):]) == \
        set(IOMMUFD_TEMPLATES)


def test_an_unbind_of_a_bound_cdev_waits_for_iommufd_unbind() -> None:
    m = model()
    assert rcs(m, *READY, f"iommufd_attach {E0} a") == [0] * 7
    assert rcs(m, f"vfio_unbind {E0}") == [0] and E0 in m.state.vfio.unbinding
    assert rcs(m, f"iommufd_unbind {E0}") == [0]
    assert E0 not in m.state.vfio.bound and m.domain_of(E0) == "default"
