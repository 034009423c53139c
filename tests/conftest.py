from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

# The longest tests (minutes each: the differential fuzzer per platform and kernel, the wrong
# rule it must catch). Run first, so that with pytest-xdist (make test runs -n) the workers do
# not end with one of them still going while the others are idle.
LONGEST = ("test_differential_fuzzing", "test_a_wrong_model_rule")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.name.startswith(LONGEST))  # stable: order kept
