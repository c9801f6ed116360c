"""``WindowPredictionCollector``: the default collector (the faithful baseline in ``bench/``)."""

from __future__ import annotations

import typing as tp

from bench.baseline import DefaultCollector


class WindowPredictionCollector(DefaultCollector):
    _Y_PRED_PREFIX: tp.ClassVar[str] = "y_pred_"
    _Y_TRUE_PREFIX: tp.ClassVar[str] = "y_true_"
    _METADATA_KEY: tp.ClassVar[str] = "metadata"
