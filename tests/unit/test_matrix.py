"""The run's matrix as guest jobs, and its shards (pure)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import ConfigError
from harness.matrix import Job, parse_shard, plan, shard

DEFAULT, OTHER = Path("default.toml"), Path("other.toml")
FILES = [Path(f"s{i:02}.toml") for i in range(17)]


def jobs(platforms: int = 2, kernels: int = 3, files: int = 17) -> list[Job]:
    names = ["x86_64-vtd", "aarch64-smmuv3"][:platforms]
    triples = [(p, f, OTHER if i % 5 == 4 else DEFAULT)
               for p in names for i, f in enumerate(FILES[:files])]
    return plan(names, [f"debian:{k}" for k in ("6.1", "6.12", "7.2")[:kernels]], triples)


def runs(js: list[Job]) -> Counter[tuple[str, str, Path]]:
    return Counter((j.platform, j.kernel, s) for j in js for s in j.scenarios)


def test_one_job_per_platform_kernel_and_topology_in_order() -> None:
    js = jobs()
    assert len(js) == 2 * 3 * 2
    assert [(j.platform, j.kernel, j.topology) for j in js[:2]] == [
        ("x86_64-vtd", "debian:6.1", DEFAULT), ("x86_64-vtd", "debian:6.1", OTHER)]
    assert js[0].scenarios == tuple(f for i, f in enumerate(FILES) if i % 5 != 4)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 17), st.integers(1, 40))
def test_shards_cover_the_matrix_once(platforms: int, kernels: int, files: int,
                                      count: int) -> None:
    js = jobs(platforms, kernels, files)
    parts = [shard(js, i, count) for i in range(1, count + 1)]
    merged: Counter[tuple[str, str, Path]] = Counter()
    for p in parts:
        merged += runs(p)
    assert merged == runs(js)  # every scenario run exactly once over all shards
    assert all(set(runs(p).values()) <= {1} for p in parts)


def test_shards_are_the_same_on_every_call_and_balanced() -> None:
    js = jobs()
    assert [shard(js, i, 4) for i in range(1, 5)] == [shard(list(js), i, 4) for i in range(1, 5)]
    loads = [sum(j.weight for j in shard(js, i, 4)) for i in range(1, 5)]
    assert max(loads) - min(loads) <= max(j.weight for j in js)


def test_more_shards_than_jobs_split_the_jobs() -> None:
    js = jobs(1, 1)  # two jobs
    parts = [shard(js, i, 6) for i in range(1, 7)]
    assert all(parts), "no shard is left idle while a job can still be split"


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "a/b", "2", "1/2/3", ""])
def test_a_bad_shard_is_one_line(text: str) -> None:
    with pytest.raises(ConfigError, match=r"is not I/N with 1 <= I <= N .*--shard 2/4"):
        parse_shard(text)


def test_a_shard() -> None:
    assert parse_shard("2/4") == (2, 4) and parse_shard("1/1") == (1, 1)
