"""A faithful re-implementation of neuralbench 0.4.0's default ``WindowPredictionCollector``.

It reproduces the collector described in the last section of ``DESIGN.md`` ("The default
collector (what we replace)"), which is what "drop-in" means for nbstream:

- ``on_test_epoch_start`` clears the folder (``CacheDict(folder).clear()``, global rank zero
  only) and resets the in-RAM metadata lists;
- ``on_test_batch_end`` (global rank zero only) unpacks ``y_pred, y_true = outputs``, calls
  ``tensor.detach().cpu().numpy()`` on the main thread and appends each array to an exca
  ``CacheDict`` under ``y_pred_{counter:08d}`` / ``y_true_{counter:08d}`` (one running counter
  over the epoch's batches, all dataloaders), then appends one metadata entry per window;
- ``on_test_epoch_end`` writes the metadata ``DataFrame`` under ``metadata`` (exca's automatic
  dispatch sends a ``DataFrame`` to its ``PandasDataFrame`` handler: a CSV file).

``read_default`` is its reader: it lists the keys, sorts the chunk keys per prefix and
``np.concatenate``-s them, so the whole arrays end up in RAM.

It exists so that tests can check nbstream's collector against the behaviour it replaces, and
so that benchmarks can run both side by side. It is not part of the ``nbstream`` package.

Two choices where the description leaves room, both in the baseline's favour:

- one exca write context stays open for the whole epoch (entered at epoch start, left at epoch
  end), the way a per-batch chunk writer would realistically use ``CacheDict.write()``: files
  are opened once instead of once per batch;
- a batch with no windows is skipped (exca refuses to dump an empty array).
"""

from __future__ import annotations

import contextlib
import math
import typing as tp
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
from exca.cachedict import CacheDict

__all__ = ["GROUP_FALLBACKS", "DefaultCollector", "read_default"]

# After the configured ``group_field``, the trigger attributes tried in order.
GROUP_FALLBACKS = ("category", "filepath")
_PREFIXES = ("y_true", "y_pred")


def _is_missing(value: tp.Any) -> bool:
    """None and NaN (a pandas event row's empty cell) both mean "no value"."""
    if value is None:
        return True
    try:
        return bool(isinstance(value, float) and math.isnan(value))
    except TypeError:
        return False


def _group_of(segment: tp.Any, group_field: str) -> tp.Any:
    """The window's group: the trigger's ``group_field``, else category, else filepath."""
    trigger = getattr(segment, "trigger", None)
    if trigger is None:
        return None
    for field in (group_field, *GROUP_FALLBACKS):
        value = getattr(trigger, field, None)
        if not _is_missing(value):
            return value
    return None


def _to_numpy(tensor: tp.Any) -> np.ndarray:
    """What the default collector does with each output, on the main thread."""
    return tensor.detach().cpu().numpy()


class DefaultCollector(pl.Callback):
    """neuralbench 0.4.0's default window-prediction collector (see the module docstring).

    Parameters
    ----------
    folder:
        Where the exca ``CacheDict`` lives; cleared at each test epoch start.
    group_field:
        The trigger attribute naming a window's group (``category`` and ``filepath`` are the
        fallbacks).
    """

    def __init__(self, folder: str | Path, group_field: str = "text") -> None:
        super().__init__()
        self.folder = Path(folder)
        self.group_field = group_field
        self._cache: CacheDict[tp.Any] | None = None
        self._write_ctx: contextlib.AbstractContextManager[tp.Any] | None = None
        self._counter = 0
        self._reset_metadata()

    def _reset_metadata(self) -> None:
        self._timeline: list[str] = []
        self._batch_idx: list[int] = []
        self._dataloader_idx: list[int] = []
        self._subject_id: list[tp.Any] = []
        self._group: list[tp.Any] = []
        self._all_have_subject = True
        self._counter = 0

    # -- write context: opened once per epoch, closed at epoch end or on failure --

    def _open(self) -> CacheDict[tp.Any]:
        if self._cache is None:
            self._cache = CacheDict(self.folder, keep_in_ram=False)
            self._write_ctx = self._cache.write()
            self._write_ctx.__enter__()
        return self._cache

    def _close(self) -> None:
        ctx, self._write_ctx, self._cache = self._write_ctx, None, None
        if ctx is not None:
            ctx.__exit__(None, None, None)

    # -- Lightning hooks --

    def on_test_epoch_start(self, trainer: tp.Any, pl_module: tp.Any) -> None:
        self._close()
        self._reset_metadata()
        if trainer.is_global_zero:
            CacheDict(self.folder, keep_in_ram=False).clear()
            self._open()

    def on_test_batch_end(
        self,
        trainer: tp.Any,
        pl_module: tp.Any,
        outputs: tp.Any,
        batch: tp.Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.is_global_zero:
            return
        y_pred, y_true = outputs
        pred, true = _to_numpy(y_pred), _to_numpy(y_true)
        n_windows = len(pred)
        if n_windows == 0:
            return
        cache = self._open()
        cache[f"y_pred_{self._counter:08d}"] = pred
        cache[f"y_true_{self._counter:08d}"] = true
        self._counter += 1
        segments = batch.segments
        self._timeline.extend(seg.timeline for seg in segments)
        self._batch_idx.extend([batch_idx] * n_windows)
        self._dataloader_idx.extend([dataloader_idx] * n_windows)
        subject = batch.data.get("subject_id")
        if subject is None:
            self._all_have_subject = False
        else:
            self._subject_id.extend(subject.tolist() if hasattr(subject, "tolist") else subject)
        self._group.extend(_group_of(seg, self.group_field) for seg in segments)

    def on_test_epoch_end(self, trainer: tp.Any, pl_module: tp.Any) -> None:
        if not trainer.is_global_zero:
            return
        cache = self._open()
        cache["metadata"] = self.metadata()
        self._close()

    def on_exception(self, trainer: tp.Any, pl_module: tp.Any, exception: BaseException) -> None:
        self._close()

    def teardown(self, trainer: tp.Any, pl_module: tp.Any, stage: str) -> None:
        self._close()

    def metadata(self) -> pd.DataFrame:
        """One row per window; optional columns only when every window has a value."""
        columns: dict[str, list[tp.Any]] = {
            "timeline": self._timeline,
            "batch_idx": self._batch_idx,
            "dataloader_idx": self._dataloader_idx,
        }
        if self._all_have_subject and self._timeline:
            columns["subject_id"] = self._subject_id
        if self._group and not any(_is_missing(g) for g in self._group):
            columns["group"] = self._group
        return pd.DataFrame(columns)


def read_default(folder: str | Path) -> dict[str, tp.Any]:
    """Read a ``DefaultCollector`` folder: ``metadata``, ``y_true``, ``y_pred``, all in RAM."""
    cache: CacheDict[tp.Any] = CacheDict(folder, keep_in_ram=False)
    keys = sorted(cache.keys())
    out: dict[str, tp.Any] = {"metadata": cache["metadata"]}
    for prefix in _PREFIXES:
        chunks = [cache[k] for k in keys if k.startswith(prefix + "_")]
        out[prefix] = np.concatenate(chunks) if chunks else np.empty((0,), dtype=np.float32)
    return out
