"""DMA through edu and the domains' mappings: what comes back, and whether the IOMMU
reports a fault (pure)."""

from __future__ import annotations

from .base import ModelBase
from .state import (
    BLOCKING,
    DEFAULT,
    DMA_API,
    EEXIST,
    EINVAL,
    EIO,
    ENODEV,
    ENOENT,
    ENOSPC,
    EPERM,
    OWNED,
    Outcome,
    _int,
)


class DmaRules(ModelBase):
    # ------------------------------------------------------------------ DMA through edu
    def _dma_domain(self, dev: str) -> str | None:
        """The domain that translates the device's DMA: its group's, else (SMMUv3, no group of
        its own) that of the bridge alias's group; None when nothing does."""
        g = self.state.group_of(dev) or self.state.group_of(self.dma_alias.get(dev, ""))
        if g is None:
            return None
        if g.domain == DEFAULT and g.dtype == "identity":
            return "identity"
        return g.domain

    def _edu_bound(self, dev: str) -> bool:
        """The module drives edu's DMA engine only through its own drivers (ih_attach.c:
        bound_dev): a device on vfio-pci is not one of them."""
        return self.state.drivers.get(dev) in (DMA_API, OWNED) and dev not in self.state.vfio.bound

    def dma(self, dev: str, handle: str, iova: str, length: str) -> Outcome:
        if not self._edu_bound(dev):
            return Outcome.guarded(ENODEV)
        if handle not in self.state.domains:
            return Outcome.guarded(ENOENT)
        start, count = _int(iova), _int(length)
        if not 0 < count <= 4095:
            return Outcome.guarded(EINVAL)  # the module's EDU_DMA_MAX (QEMU 7.2 edu)
        span = next(((s, s + n) for (h, s), n in self.state.maps.items()
                     if h == handle and s <= start < s + n), None)
        if span is None or start + count > span[1]:
            return Outcome.guarded(ENOENT)
        domain = self._dma_domain(dev)
        if domain == "identity":
            return Outcome.guarded(EPERM)  # the module: an IOVA would be a physical address
        # The pattern goes RAM → edu → RAM through whatever domain translates the device:
        # only through ``handle`` does it come back (ih_attach.c: op_dma); elsewhere the
        # buffer stays zeroed (-EIO) and the IOMMU faults unless that domain maps the range.
        if domain == handle:
            return self.hit("dma.through_domain")
        self.hit("dma.elsewhere")
        return Outcome(-EIO, fault=self._faults(domain, start, count))

    def dma_raw(self, dev: str, iova: str, direction: str) -> Outcome:
        if not self._edu_bound(dev):
            return Outcome.guarded(ENODEV)
        start = _int(iova)
        if direction not in ("to_ram", "from_ram"):
            return Outcome.guarded(EINVAL)
        domain = self._dma_domain(dev)
        if domain == "identity":
            return Outcome.guarded(EPERM)
        return Outcome(0, fault=self._faults(domain, start, 8))

    def _faults(self, domain: str | None, iova: int, length: int) -> bool:
        """Whether a DMA through ``domain`` is reported as a fault. 6.12's blocked domain on
        SMMUv3 is an abort STE (arm-smmu-v3.c: arm_smmu_make_abort_ste), which terminates
        DMA without recording an event (QEMU hw/arm/smmuv3.c: an aborting config records
        none); VT-d reports its cleared context entry (fault reason 2)."""
        if domain == BLOCKING and self.smmu and self.profile.blocking_type == 0:
            return False
        if self._maps_all(domain, iova, length):
            return False
        self.hit("dma.fault")
        return True

    def _space_key(self, domain: str | None) -> str | None:
        """Where a domain's mappings are kept: a domain's own, but an iommufd domain's are its
        IOAS's (an IOAS's automatic domain and every HWPT on it map what the IOAS maps)."""
        if domain is not None and domain.startswith("iommufd:"):
            pt = domain.removeprefix("iommufd:")
            return f"iommufd:{self.state.iommufd.hwpts.get(pt, pt)}"
        return domain

    def _maps_all(self, domain: str | None, iova: int, length: int) -> bool:
        """Whether ``domain`` maps every byte of [iova, iova + length)."""
        end = iova + length
        key = self._space_key(domain)
        for (h, start), size in sorted(self.state.maps.items(), key=lambda kv: kv[0][1]):
            if h == key and start <= iova < start + size:
                iova = start + size
        return iova >= end

    # ------------------------------------------------------------------ mappings
    def map(self, handle: str, iova: int, size: int) -> Outcome:
        if handle not in self.state.domains:
            return Outcome.guarded(ENOENT)
        if size <= 0 or size > 1 << 20 or iova % 4096 or size % 4096:
            return Outcome.guarded(EINVAL)
        for (h, start), length in self.state.maps.items():
            if h == handle and iova < start + length and start < iova + size:
                return Outcome.guarded(EEXIST)  # the module: VT-d WARNs on a live PTE
        if len(self.state.maps) >= 256:
            return Outcome.guarded(ENOSPC)
        # arm-smmu-v3 (6.1): the io-pgtable exists only after the first attach
        # (arm_smmu_domain_finalise from arm_smmu_attach_dev): iommu_map gives -ENODEV.
        if not self.state.domains[handle]:
            return self.hit("map.unfinalised", Outcome(-ENODEV))
        self.state.maps[(handle, iova)] = size
        return self.hit("map.ok")

    def unmap(self, handle: str, iova: int) -> Outcome:
        if handle not in self.state.domains:
            return Outcome.guarded(ENOENT)
        if (handle, iova) not in self.state.maps:
            return Outcome.guarded(ENOENT)
        del self.state.maps[(handle, iova)]
        return Outcome.ok()
