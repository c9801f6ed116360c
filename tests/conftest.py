"""Shared fixtures: the end-to-end model and data come from :mod:`nbstream.demo`."""

from __future__ import annotations

import typing as tp

import lightning.pytorch as pl
import pytest

from nbstream import _numba_config
from nbstream.demo import make_trainer
from nbstream.store import GrowableNpy


@pytest.fixture
def trainer_factory() -> tp.Callable[..., pl.Trainer]:
    return make_trainer


@pytest.fixture
def reservations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every capacity (in rows) a growable array reserves, in order."""
    capacities: list[int] = []
    original = GrowableNpy._reserve

    def spy(self: GrowableNpy, capacity: int) -> None:
        capacities.append(capacity)
        original(self, capacity)

    monkeypatch.setattr(GrowableNpy, "_reserve", spy)
    return capacities


@pytest.fixture(params=["numpy", "numba"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a kernel test on the small-input numpy path and on the Numba kernels (tiny
    blocks, so streaming and chunking are exercised on small arrays)."""
    if request.param == "numba":
        monkeypatch.setattr(_numba_config, "SERIAL_MAX_BYTES", 0)
        monkeypatch.setattr(_numba_config, "STREAM_BLOCK_BYTES", 256)
        monkeypatch.setattr(_numba_config, "REDUCE_BLOCK_BYTES", 256)
        monkeypatch.setattr(_numba_config, "COPY_CHUNK_BYTES", 64)
    else:
        monkeypatch.setattr(_numba_config, "SERIAL_MAX_BYTES", 1 << 40)
    return str(request.param)
