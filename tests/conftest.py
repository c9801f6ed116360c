"""Shared fixtures: the end-to-end model and data come from :mod:`nbstream.demo`."""

from __future__ import annotations

import typing as tp

import lightning.pytorch as pl
import pytest

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
