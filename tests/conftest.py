"""Shared fixtures: the end-to-end model and data come from :mod:`nbstream.demo`."""

from __future__ import annotations

import typing as tp

import lightning.pytorch as pl
import pytest

from nbstream.demo import make_trainer


@pytest.fixture
def trainer_factory() -> tp.Callable[..., pl.Trainer]:
    return make_trainer
