"""``WindowPredictionCollector``: the Lightning callback, a drop-in for neuralbench's default.

Same constructor (``folder``, ``group_field="text"``), same hooks, same metadata columns
and omission rules, same dict on read. What differs is the path to disk: the hook only
validates and hands the batch to a :class:`~nbstream.writer.Writer`, whose thread writes
into growable ``.npy`` memmaps (:mod:`nbstream.store`) and builds the metadata rows.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import typing as tp
from collections.abc import Mapping
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from nbstream.errors import InPlaceChangeError, PredictionFormatError, WriterError
from nbstream.metadata import WindowMetadata
from nbstream.store import PredictionStore, clear_folder
from nbstream.writer import DEFAULT_MAX_INFLIGHT_BYTES, Writer

if tp.TYPE_CHECKING:
    import lightning.pytorch as pl
    import torch

__all__ = ["WindowPredictionCollector"]

logger = logging.getLogger(__name__)
_NAMES = ("y_pred", "y_true")


class _Run:
    """The state of one test epoch on global rank zero."""

    def __init__(self, folder: Path, collector: WindowPredictionCollector) -> None:
        import torch

        self.store = PredictionStore(folder, fsync=collector.fsync)
        self.metadata = WindowMetadata(collector.group_field)
        self.writer = Writer(
            self.store.append,
            synchronous=collector.synchronous,
            max_inflight_bytes=collector.max_inflight_bytes,
            copy_cpu_outputs=collector.copy_cpu_outputs,
            on_idle=self.metadata.seal,  # between batches: build the table's Arrow columns
        )
        self.expected: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
        self.started = time.perf_counter()
        self._signature: tuple[tp.Any, ...] | None = None
        self._tensor = torch.Tensor  # for the hook's exact-type checks

    def checked_pair(self, outputs: tp.Any, n_windows: int) -> dict[str, torch.Tensor]:
        """``{"y_pred", "y_true"}`` from the hook's outputs, or a PredictionFormatError.

        Why two paths: this runs on every batch. A pair with the dtypes and per-window
        shapes of the first batch is accepted with a handful of attribute reads; anything
        else goes through the full checks, which name what is wrong.
        """
        if type(outputs) in (tuple, list) and len(outputs) == 2:
            y_pred, y_true = outputs
            if type(y_pred) is self._tensor and type(y_true) is self._tensor:
                # each read of a tensor attribute goes through torch's bindings: once each
                pred_shape, true_shape = y_pred.shape, y_true.shape
                if (
                    pred_shape
                    and true_shape
                    and pred_shape[0] == n_windows == true_shape[0]
                    and self._signature
                    == (y_pred.dtype, pred_shape[1:], y_true.dtype, true_shape[1:])
                ):
                    return {"y_pred": y_pred, "y_true": y_true}
        arrays = _prediction_pair(outputs, n_windows)
        if n_windows:
            _check_consistent(self.expected, arrays)
            y_pred, y_true = arrays["y_pred"], arrays["y_true"]
            self._signature = (y_pred.dtype, y_pred.shape[1:], y_true.dtype, y_true.shape[1:])
        return arrays


class WindowPredictionCollector(Callback):
    """Stream each test batch's ``(y_pred, y_true)`` and window metadata to ``folder``.

    Parameters
    ----------
    folder:
        Where the predictions go (cleared at each test epoch start; it must hold nothing
        but a previous collector's output).
    group_field:
        The trigger field naming each window's retrieval group (then ``category``, then
        ``filepath``).
    synchronous:
        Write in the hook instead of on the background thread (for debugging).
    max_inflight_bytes:
        Bytes handed to the writer and not yet on disk; the hook waits beyond it.
    copy_cpu_outputs:
        ``None``: hand CPU outputs over without a copy when torch can detect a later
        in-place change (raising if one happens), copy inference-mode tensors. ``True``:
        always copy. ``False``: never copy (you promise not to change returned tensors).
    fsync:
        Flush files to the disk when the epoch ends, so a crash after it loses nothing.
    """

    def __init__(
        self,
        folder: str | Path,
        group_field: str = "text",
        *,
        synchronous: bool = False,
        max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
        copy_cpu_outputs: bool | None = None,
        fsync: bool = True,
    ) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.group_field = group_field
        self.synchronous = synchronous
        self.max_inflight_bytes = max_inflight_bytes
        self.copy_cpu_outputs = copy_cpu_outputs
        self.fsync = fsync
        self._run: _Run | None = None
        self.last_manifest: dict[str, tp.Any] | None = None

    # -- hooks -------------------------------------------------------------------------
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._close_run(status="stopped", error="a new test epoch started", raise_errors=False)
        clear_folder(self.folder)
        self._run = _Run(self.folder, self)
        self.last_manifest = None

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: tp.Any,
        batch: tp.Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        run = self._run
        if run is None:
            return
        segments = getattr(batch, "segments", None)
        if segments is None:
            raise PredictionFormatError(
                f"the test batch ({type(batch).__name__}) has no .segments; the collector "
                "needs one segment per window to write its metadata"
            )
        n_windows = len(segments)
        arrays = run.checked_pair(outputs, n_windows)
        if not n_windows:
            return
        if run.store.capacity_hint is None:
            run.store.capacity_hint = _expected_windows(trainer, n_windows)
        data = getattr(batch, "data", None)
        subject_ids = None
        if type(data) is dict or isinstance(data, Mapping):
            subject_ids = data.get("subject_id")
        run.writer.submit(
            arrays,
            label=f"batch {batch_idx} of dataloader {dataloader_idx}",
            then=functools.partial(
                run.metadata.add, segments, subject_ids, batch_idx, dataloader_idx
            ),
            rows=n_windows,
        )

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_run(status="finished", error=None, raise_errors=True)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        error = f"{type(exception).__name__}: {exception}"
        self._close_run(status="stopped", error=error, raise_errors=False)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        error = "the test ended before on_test_epoch_end"
        self._close_run(status="stopped", error=error, raise_errors=False)

    # -- ending a run ------------------------------------------------------------------
    def _close_run(self, *, status: str, error: str | None, raise_errors: bool) -> None:
        """Write what is queued and publish every intact window; raise or log failures."""
        run, self._run = self._run, None
        if run is None:
            return
        failure: BaseException | None = None
        valid_rows: int | None = None
        try:
            run.writer.close()
        except InPlaceChangeError as exc:
            failure, valid_rows = exc, exc.valid_rows
        except WriterError as exc:
            failure = exc
        if failure is not None:
            status, error = "stopped", f"{type(failure).__name__}: {failure}"
        # Metadata is recorded only after a batch's arrays are written: it counts the
        # windows that are whole.
        n_rows = len(run.metadata) if valid_rows is None else min(valid_rows, len(run.metadata))
        try:
            for name, (dtype, row_shape) in run.expected.items():
                run.store.create(name, dtype, row_shape, capacity=1)  # even if nothing came
            run.store.truncate(n_rows)
            self.last_manifest = run.store.finalize(
                run.metadata.to_table(n_rows), status=status, error=error
            )
        except BaseException as exc:
            run.store.discard()
            if not raise_errors:
                logger.error("could not publish the predictions in %s: %s", self.folder, exc)
                return
            raise
        manifest = self.last_manifest
        seconds = time.perf_counter() - run.started
        logger.info(
            "nbstream: %d windows (%.1f MB) saved to %s in %.2f s (%s)",
            manifest["n_windows"],
            run.writer.bytes_written / 1e6,
            self.folder,
            seconds,
            ", ".join(
                f"{k} {v['dtype']} {tuple(v['shape'])}" for k, v in manifest["arrays"].items()
            ),
        )
        if failure is not None:
            if raise_errors:
                raise failure
            logger.error("predictions in %s stop early: %s", self.folder, failure)


def _prediction_pair(outputs: tp.Any, n_windows: int) -> dict[str, torch.Tensor]:
    import torch

    if not (isinstance(outputs, tuple | list) and len(outputs) == 2):
        got = type(outputs).__name__
        if isinstance(outputs, tuple | list):
            got = f"a {got} of {len(outputs)} items"
        raise PredictionFormatError(
            f"test_step returned {got}; the collector needs a (y_pred, y_true) pair of "
            "tensors with the batch on dimension 0"
        )
    arrays: dict[str, torch.Tensor] = {}
    for name, tensor in zip(_NAMES, outputs, strict=True):
        if not isinstance(tensor, torch.Tensor):
            raise PredictionFormatError(
                f"{name} is a {type(tensor).__name__}, expected a torch.Tensor; "
                "test_step must return (y_pred, y_true) tensors"
            )
        rows = tensor.shape[0] if tensor.ndim else "no"
        if rows != n_windows:
            raise PredictionFormatError(
                f"{name} has {rows} rows but the batch has {n_windows} segments; test_step "
                "must return (y_pred, y_true) with the batch on dimension 0"
            )
        arrays[name] = tensor
    return arrays


def _check_consistent(
    expected: dict[str, tuple[torch.dtype, tuple[int, ...]]], arrays: dict[str, torch.Tensor]
) -> None:
    for name, tensor in arrays.items():
        got = (tensor.dtype, tuple(tensor.shape[1:]))
        want = expected.setdefault(name, got)
        if got != want:
            raise PredictionFormatError(
                f"{name} changed from dtype {want[0]}, shape (n, {', '.join(map(str, want[1]))})"
                f" to dtype {got[0]}, shape {tuple(tensor.shape)} between batches; every batch "
                "must return the same dtype and per-window shape (pad or cast in test_step)"
            )


def _expected_windows(trainer: tp.Any, batch_size: int) -> int | None:
    """Windows the whole test set should hold, from Lightning's batch counts when known."""
    counts = getattr(trainer, "num_test_batches", None) or []
    total = sum(counts) if isinstance(counts, list | tuple) else counts
    if not isinstance(total, int | float) or not math.isfinite(total) or total <= 0:
        return None
    return int(total) * batch_size
