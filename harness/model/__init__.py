"""The reference model of the kernel's IOMMU attach and DMA-ownership rules (pure)."""

from .core import DMA_API, NO_DRIVER, OWNED, Model, Outcome, Profile
from .profiles import PROFILES, ProfileChoice, choose_profile, get_profile, profile_for
from .rules import Rule, RuleDiff, diff_profiles, format_diff, format_profiles, format_rules

__all__ = ["DMA_API", "NO_DRIVER", "OWNED", "PROFILES", "Model", "Outcome", "Profile",
           "ProfileChoice", "Rule", "RuleDiff", "choose_profile", "diff_profiles",
           "format_diff", "format_profiles", "format_rules", "get_profile", "profile_for"]
