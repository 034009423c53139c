"""Kernel ``.config`` parsing and the per-platform requirement check (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def parse_config(text: str) -> dict[str, str]:
    """Map ``CONFIG_FOO`` to its value (``y``, ``m``, a string or number); unset ones are absent."""
    options: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("CONFIG_") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        options[name] = value.strip('"')
    return options


def missing_options(config: Mapping[str, str], required: Iterable[str]) -> list[str]:
    """Required options that are neither built in nor modular.

    An entry ``"A|B"`` is satisfied by either option (for example a driver that may be ``=y``
    under one name in one version and another name in the next).
    """
    missing = []
    for entry in required:
        alternatives = entry.split("|")
        if not any(config.get(opt) in ("y", "m") for opt in alternatives):
            missing.append(entry)
    return missing


def builtin_required(config: Mapping[str, str], required: Iterable[str]) -> list[str]:
    """Options that must be ``=y`` (the IOMMU driver cannot be a module) but are not."""
    return [opt for opt in required if config.get(opt) != "y"]
