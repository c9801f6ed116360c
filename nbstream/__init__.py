"""nbstream: stream test-time predictions to memory-mapped ``.npy`` files and read them back.

``import nbstream`` stays light: torch, lightning and numba load only when the names that
need them are first used.
"""

from __future__ import annotations

import importlib
import typing as tp

from nbstream.errors import (
    CorruptPredictionsError,
    IncompletePredictionsError,
    InPlaceChangeError,
    PredictionFormatError,
    PredictionsNotFoundError,
    UnsupportedEntryError,
    WriterError,
)

__version__ = "0.1.0"

__all__ = [
    "CorruptPredictionsError",
    "Experiment",
    "InPlaceChangeError",
    "IncompletePredictionsError",
    "PredictionFormatError",
    "PredictionsNotFoundError",
    "StoppedEarlyWarning",
    "UnsupportedEntryError",
    "WindowPredictionCollector",
    "WriterError",
    "__version__",
    "concatenate",
    "convert_legacy",
    "read_predictions",
    "retrieval_set",
]

# name -> module that defines it, imported on first attribute access (PEP 562)
_LAZY = {
    "WindowPredictionCollector": "nbstream.collector",
    "Experiment": "nbstream.experiment",
    "read_predictions": "nbstream.reader",
    "StoppedEarlyWarning": "nbstream.reader",
    "concatenate": "nbstream.kernels",
    "convert_legacy": "nbstream.convert",
    "retrieval_set": "nbstream.retrieval",
}

if tp.TYPE_CHECKING:
    from nbstream.collector import WindowPredictionCollector
    from nbstream.convert import convert_legacy
    from nbstream.experiment import Experiment
    from nbstream.kernels import concatenate
    from nbstream.reader import StoppedEarlyWarning, read_predictions
    from nbstream.retrieval import retrieval_set


def __getattr__(name: str) -> tp.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbstream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
