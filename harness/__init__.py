"""QEMU-backed integration tests for the Linux IOMMU domain-attach APIs."""

__version__ = "0.1.0"
