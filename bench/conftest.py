"""Fixtures for the benchmarks: which collector runs, and whether sizes are full or tiny."""

from __future__ import annotations

import typing as tp

import pytest

from bench.workloads import nbstream_available


@pytest.fixture(params=["baseline", "nbstream"])
def collector_name(request: pytest.FixtureRequest) -> str:
    """Each benchmark runs once per collector; nbstream's is skipped until it imports."""
    name = tp.cast(str, request.param)
    if name == "nbstream" and not nbstream_available():
        pytest.skip("nbstream's collector does not import yet")
    return name


@pytest.fixture
def full_size(benchmark: tp.Any) -> bool:
    """Full sizes only when timing was asked for; tiny ones keep the default run fast."""
    return not benchmark.disabled
