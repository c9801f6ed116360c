"""The few exceptions nbstream raises, each a subclass of the built-in users already catch."""

from __future__ import annotations

__all__ = [
    "CorruptPredictionsError",
    "InPlaceChangeError",
    "IncompletePredictionsError",
    "PredictionFormatError",
    "PredictionsNotFoundError",
    "UnsupportedEntryError",
    "WriterError",
]


class PredictionFormatError(ValueError):
    """What ``test_step`` returned cannot be saved as window predictions."""


class InPlaceChangeError(PredictionFormatError):
    """An output handed to the writer without a copy changed before it was safely written.

    ``valid_rows`` counts the windows written before the suspect batch: those are intact.
    """

    def __init__(self, valid_rows: int, message: str) -> None:
        super().__init__(message)
        self.valid_rows = valid_rows


class PredictionsNotFoundError(FileNotFoundError):
    """The folder is missing or holds no predictions at all."""


class IncompletePredictionsError(FileNotFoundError):
    """The folder was being written when its run stopped (no complete manifest)."""


class CorruptPredictionsError(ValueError):
    """The folder's files disagree with its manifest; reading would return garbage."""


class UnsupportedEntryError(ValueError):
    """A legacy cache entry would need unpickling (or an unknown handler) to be read."""


class WriterError(RuntimeError):
    """The background writer failed; the original exception is chained as ``__cause__``."""
