"""The benchmark workloads, the simulated test loop, and the collectors it drives.

Each workload is one kind of test batch from the brain-decoding tasks nbstream serves: large
regression targets (fMRI), CTC log-probs with integer labels, retrieval embeddings, and small
classification logits. Tensors are made fresh for each batch, outside any timed hook, so a
collector can neither reuse nor pre-fault them.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import typing as tp
from pathlib import Path

import torch

from nbstream.testing import Batch, FakeTrainer, make_batch

__all__ = [
    "COLLECTOR_NAMES",
    "SCALING_WORKLOADS",
    "WORKLOADS",
    "EpochTimes",
    "QueuePut",
    "ScalingWorkload",
    "Workload",
    "make_collector",
    "make_step",
    "nbstream_available",
    "read_folder",
    "run_epoch",
]


@dataclasses.dataclass(frozen=True)
class Workload:
    """One test batch's shapes: ``n_windows`` rows of ``pred_shape`` / ``true_shape``."""

    name: str
    n_windows: int
    pred_shape: tuple[int, ...]
    pred_dtype: torch.dtype
    true_shape: tuple[int, ...]
    true_dtype: torch.dtype
    n_batches: int  # batches in a full benchmark epoch

    @property
    def batch_bytes(self) -> int:
        """Bytes of one batch's ``y_pred`` plus ``y_true``."""
        pred = self.n_windows * _prod(self.pred_shape) * self.pred_dtype.itemsize
        true = self.n_windows * _prod(self.true_shape) * self.true_dtype.itemsize
        return pred + true

    def scaled(self, n_windows: int, n_batches: int, shrink: int = 1) -> Workload:
        """A smaller copy (fewer windows/batches, per-window dims divided by ``shrink``)."""

        def small(shape: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(max(1, d // shrink) for d in shape)

        return dataclasses.replace(
            self,
            n_windows=n_windows,
            n_batches=n_batches,
            pred_shape=small(self.pred_shape),
            true_shape=small(self.true_shape),
        )


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("fmri", 32, (50_000,), torch.float32, (50_000,), torch.float32, 200),
        Workload("ctc", 64, (200, 100), torch.float32, (50,), torch.int64, 200),
        Workload("retrieval", 256, (768,), torch.float32, (768,), torch.float32, 500),
        Workload("classif", 256, (4,), torch.float32, (), torch.int64, 500),
    )
}


@dataclasses.dataclass(frozen=True)
class ScalingWorkload:
    """One task's outputs per window, and the test-set sizes the scaling benchmark runs.

    These are issue 5's shapes, run through a real ``lightning.Trainer.test``
    (:mod:`bench.loop`); ``sizes`` are window counts, ``quick_sizes`` the smoke-test ones.
    """

    name: str
    pred_shape: tuple[int, ...]
    pred_dtype: torch.dtype
    true_shape: tuple[int, ...]
    true_dtype: torch.dtype
    batch_size: int
    sizes: tuple[int, ...]
    quick_sizes: tuple[int, ...]
    metric: str  # what bench.metrics computes from the read-back arrays

    @property
    def window_bytes(self) -> int:
        """Bytes of one window's ``y_pred`` plus ``y_true`` on disk."""
        pred = _prod(self.pred_shape) * self.pred_dtype.itemsize
        return pred + _prod(self.true_shape) * self.true_dtype.itemsize


_F32, _I64 = torch.float32, torch.int64
SCALING_WORKLOADS: dict[str, ScalingWorkload] = {
    w.name: w
    for w in (
        # 400 kB a window: 20,000 windows are 8 GB on disk.
        ScalingWorkload(
            "fmri", (50_000,), _F32, (50_000,), _F32, 32, (500, 2_500, 20_000), (16,), "mse"
        ),
        # fsaverage5: 20,484 vertices, the realistic size (the `nbstream run` demo's).
        ScalingWorkload("fmri-fs5", (20_484,), _F32, (20_484,), _F32, 32, (4_096,), (16,), "mse"),
        ScalingWorkload(
            "ctc", (625, 99), _F32, (128,), _I64, 32, (256, 1_024, 4_096), (8,), "ctc_loss"
        ),
        ScalingWorkload(
            "retrieval",
            (1536,),
            _F32,
            (1536,),
            _F32,
            256,
            (4_096, 16_384, 65_536),
            (256,),
            "top1",
        ),
        ScalingWorkload(
            "classif", (4,), _F32, (), _I64, 32, (2_048, 8_192, 32_768), (256,), "accuracy"
        ),
    )
}


def _tensor(n: int, shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """A freshly allocated, fully written (hence page-faulted) tensor."""
    out = torch.empty((n, *shape), dtype=dtype)
    out.fill_(seed % 97)
    return out


def make_step(
    workload: Workload, batch_idx: int, start: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], Batch]:
    """One batch's ``(y_pred, y_true)`` outputs and its batch object (with subject ids)."""
    w = workload
    y_pred = _tensor(w.n_windows, w.pred_shape, w.pred_dtype, batch_idx)
    y_true = _tensor(w.n_windows, w.true_shape, w.true_dtype, batch_idx + 1)
    subjects = torch.arange(start, start + w.n_windows) % 7
    batch = make_batch(w.n_windows, start=start, subject_ids=subjects)
    return (y_pred, y_true), batch


@dataclasses.dataclass
class EpochTimes:
    """What one simulated epoch measured (seconds)."""

    hook: list[float]  # main-thread on_test_batch_end, per batch
    epoch_start: float
    epoch_end: float
    wall: float  # first hook start to epoch end done (write span incl. close)
    loop: float  # whole loop incl. making batches and compute, epoch start to end


def run_epoch(
    collector: tp.Any,
    workload: Workload,
    *,
    compute: tp.Callable[[], object] | None = None,
    steps: tp.Sequence[tuple[tuple[torch.Tensor, torch.Tensor], Batch]] | None = None,
) -> EpochTimes:
    """Drive ``collector`` (or none) through one test epoch the way Lightning's loop does.

    ``compute`` stands for the model's forward pass, run before each hook. ``steps`` are
    prepared batches (for I/O-bound runs that must not pay for making them); otherwise each
    batch is made fresh, outside the timed hook.
    """
    n = workload.n_batches if steps is None else len(steps)
    trainer = FakeTrainer(num_test_batches=[n])
    hook: list[float] = []
    clock = time.perf_counter
    t_loop = clock()
    if collector is not None:
        collector.on_test_epoch_start(trainer, None)
    epoch_start = clock() - t_loop
    first = None
    start = 0
    for i in range(n):
        outputs, batch = make_step(workload, i, start) if steps is None else steps[i]
        start += len(batch)
        if compute is not None:
            compute()
        if collector is None:
            continue
        t0 = clock()
        if first is None:
            first = t0
        collector.on_test_batch_end(trainer, None, outputs, batch, i, 0)
        hook.append(clock() - t0)
        del outputs, batch
    t0 = clock()
    if collector is not None:
        collector.on_test_epoch_end(trainer, None)
    t1 = clock()
    return EpochTimes(
        hook=hook,
        epoch_start=epoch_start,
        epoch_end=t1 - t0,
        wall=t1 - (first if first is not None else t0),
        loop=t1 - t_loop,
    )


# -- the contenders --------------------------------------------------------------------------
class QueuePut:
    """A hook that only puts each batch on a plain queue a sleeping thread waits on.

    Why: it measures, in the same loop as the collectors, what waking a writer thread once
    per batch costs the hook (a futex call and an interrupt to another CPU, dear in a VM):
    the floor of a hand-off through ``queue.SimpleQueue``, which nbstream's
    :class:`~nbstream.mailbox.Mailbox` avoids while batches keep coming. Its thread only
    drops what it gets, so nothing is written.
    """

    def __init__(self) -> None:
        import queue

        self._queue: queue.SimpleQueue[tp.Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def on_test_epoch_start(self, trainer: tp.Any, pl_module: tp.Any) -> None:
        self._thread = threading.Thread(target=self._drain, name="queue-put", daemon=True)
        self._thread.start()

    def on_test_batch_end(
        self, trainer: tp.Any, module: tp.Any, outputs: tp.Any, batch: tp.Any, *idx: int
    ) -> None:
        self._queue.put((outputs, batch))

    def on_test_epoch_end(self, trainer: tp.Any, pl_module: tp.Any) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _drain(self) -> None:
        while self._queue.get() is not None:
            pass


def nbstream_available() -> bool:
    """Whether nbstream's collector imports (it is being written alongside these benches)."""
    try:
        from nbstream import WindowPredictionCollector, read_predictions  # noqa: F401
    except (ImportError, AttributeError):
        return False
    return True


def make_collector(name: str, folder: Path) -> tp.Any:
    """A fresh collector: ``baseline``, ``nbstream`` (defaults), ``nbstream-nofsync``, or
    ``queue-put`` (:class:`QueuePut`, which writes nothing)."""
    if name == "baseline":
        from bench.baseline import DefaultCollector

        return DefaultCollector(folder)
    from nbstream import WindowPredictionCollector

    if name == "nbstream":
        return WindowPredictionCollector(folder)
    if name == "nbstream-nofsync":
        return WindowPredictionCollector(folder, fsync=False)
    if name == "queue-put":
        return QueuePut()
    raise ValueError(f"unknown collector {name!r}; expected one of {COLLECTOR_NAMES}")


def read_folder(name: str, folder: Path) -> dict[str, tp.Any]:
    """Read what ``make_collector(name, ...)`` wrote, with that collector's own reader."""
    if name == "baseline":
        from bench.baseline import read_default

        return read_default(folder)
    from nbstream import read_predictions

    return read_predictions(folder)


COLLECTOR_NAMES = ("baseline", "nbstream", "nbstream-nofsync", "queue-put")
