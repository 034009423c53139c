"""The reference model of the kernel's IOMMU attach and DMA-ownership rules (pure)."""

from .core import DMA_API, NO_DRIVER, OWNED, Model, Outcome, Profile
from .profiles import PROFILES, get_profile, profile_for

__all__ = ["DMA_API", "NO_DRIVER", "OWNED", "PROFILES", "Model", "Outcome", "Profile",
           "get_profile", "profile_for"]
