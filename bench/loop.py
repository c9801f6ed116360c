"""A real test loop for the scaling benchmark: ``lightning.Trainer.test`` on the CPU.

Each workload of :data:`bench.workloads.SCALING_WORKLOADS` gets a dataset of synthetic
windows (neuralbench-shaped :class:`~nbstream.testing.Batch` objects: segments with a
timeline and a stimulus trigger, ``data["subject_id"]``) and a small torch model whose
forward produces that workload's ``y_pred``; ``test_step`` returns ``(y_pred, y_true)``.
The model's depth is calibrated so that its forward takes about as long per batch as
writing the batch at a given rate, so the collector's I/O competes with real compute
(one torch thread, standing in for an accelerator the main thread waits on) and overlap is
measured, not assumed. A timing callback wraps the collector to time its hooks on the main
thread, and the epoch, from Lightning's own calls.
"""

from __future__ import annotations

import dataclasses
import time
import typing as tp
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from bench.workloads import ScalingWorkload
from nbstream.testing import Batch, Segment, Trigger

__all__ = [
    "BenchModel",
    "LoopTimes",
    "TimedCallback",
    "WindowData",
    "calibrate",
    "make_loader",
    "run_test_loop",
]

POOL = 64  # distinct windows the dataset cycles through (keeps making batches cheap)
N_GROUPS = 512  # stimulus groups (retrieval targets are one embedding per group)
N_SUBJECTS = 7
CTC_FEATURES = 32
FEATURES = 64
HIDDEN = {"ctc": 64}  # per-frame trunk width for CTC; others use 256
CTC_VOCAB_LABELS = (1, 99)  # labels drawn from [1, 99): 0 is the CTC blank


def _identity(batch: Batch) -> Batch:
    return batch


class WindowData(Dataset):
    """``n`` windows of one workload; indexed by a list of window indices (one batch).

    Inputs and targets come from small pools, gathered into fresh tensors per batch (at
    memory speed), so making a batch costs little next to the model and the I/O.
    """

    def __init__(self, workload: ScalingWorkload, n: int, *, seed: int = 0) -> None:
        self.workload = workload
        self.n = n
        gen = torch.Generator().manual_seed(seed)
        w = workload
        in_shape = (625, CTC_FEATURES) if w.name == "ctc" else (FEATURES,)
        self.x = torch.randn(POOL, *in_shape, generator=gen)
        if w.metric == "top1":  # one target embedding per stimulus group
            self.group_targets = torch.randn(N_GROUPS, *w.true_shape, generator=gen)
        elif w.true_dtype == torch.int64:
            low, high = CTC_VOCAB_LABELS if w.name == "ctc" else (0, w.pred_shape[-1])
            self.y = torch.randint(low, high, (POOL, *w.true_shape), generator=gen)
        else:
            self.y = torch.randn(POOL, *w.true_shape, generator=gen, dtype=w.true_dtype)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, indices: list[int]) -> Batch:
        idx = torch.as_tensor(indices)
        groups = idx % N_GROUPS
        top1 = self.workload.metric == "top1"
        y = self.group_targets[groups] if top1 else self.y[idx % POOL]
        segments = [
            Segment(timeline=f"rec-{i // 100}", trigger=Trigger(text=f"stim-{i % N_GROUPS:04d}"))
            for i in indices
        ]
        data = {"x": self.x[idx % POOL], "y": y, "subject_id": idx % N_SUBJECTS}
        return Batch(segments=segments, data=data)


def make_loader(workload: ScalingWorkload, n: int) -> DataLoader:
    """Batches of ``workload.batch_size`` windows, in order, made in the main process."""
    sampler = BatchSampler(SequentialSampler(range(n)), workload.batch_size, drop_last=False)
    return DataLoader(
        WindowData(workload, n),
        batch_size=None,
        sampler=sampler,
        collate_fn=_identity,  # type: ignore[arg-type]
    )


class BenchModel(pl.LightningModule):
    """A trunk (one tanh layer applied ``depth`` times) and a head shaped like ``y_pred``.

    The trunk's weights are shared so that its cost grows with ``depth`` at a steady rate
    (the weights stay in cache), which makes the depth easy to calibrate.

    ``passthrough`` skips the model (``y_pred`` is a fresh copy of the targets): the
    I/O-bound loop, for sustained write throughput.
    """

    def __init__(self, workload: ScalingWorkload, depth: int = 0, passthrough: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.workload = workload
        self.passthrough = passthrough
        hidden = HIDDEN.get(workload.name, 256)
        n_in = CTC_FEATURES if workload.name == "ctc" else FEATURES
        self.inp = torch.nn.Linear(n_in, hidden)
        self.depth = depth
        self.trunk = torch.nn.Linear(hidden, hidden)
        self.head = torch.nn.Linear(hidden, workload.pred_shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        for _ in range(self.depth):
            h = torch.tanh(self.trunk(h))
        out = self.head(h)
        if self.workload.name == "ctc":
            out = torch.log_softmax(out, dim=-1)
        return out

    def test_step(  # type: ignore[override]
        self, batch: Batch, batch_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y_true = batch.data["y"]
        if self.passthrough:
            if y_true.dtype.is_floating_point:
                return y_true + 1.0, y_true
            return y_true.new_empty((len(y_true), *self.workload.pred_shape)).fill_(1), y_true
        return self(batch.data["x"]), y_true

    def configure_optimizers(self) -> None:  # pragma: no cover - never trained
        return None


def _forward_seconds(model: BenchModel, batch: Batch, repeats: int = 7) -> float:
    """The fastest of ``repeats`` forwards (the least disturbed by other load)."""
    times = []
    with torch.inference_mode():
        model(batch.data["x"])  # warm up
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(batch.data["x"])
            times.append(time.perf_counter() - t0)
    return min(times)


def calibrate(workload: ScalingWorkload, seconds_per_batch: float) -> tuple[int, float]:
    """The trunk depth whose forward takes about ``seconds_per_batch``, and its time."""
    batch = WindowData(workload, workload.batch_size)[list(range(workload.batch_size))]
    model = BenchModel(workload, 0)
    base = _forward_seconds(model, batch)
    depth = 16
    for _ in range(3):  # secant steps: the cost per layer, measured at the current depth
        model.depth = depth
        per_layer = max(1e-7, (_forward_seconds(model, batch) - base) / depth)
        depth = max(0, round((seconds_per_batch - base) / per_layer))
        if depth == 0:
            break
    model.depth = depth
    return depth, _forward_seconds(model, batch)


@dataclasses.dataclass
class LoopTimes:
    """What one ``Trainer.test`` measured (seconds)."""

    hook: list[float]  # main-thread on_test_batch_end of the collector, per batch
    epoch_end: float  # the collector's on_test_epoch_end (flush, fsync, publish)
    epoch: float  # first on_test_epoch_start to the end of on_test_epoch_end: the loop
    test_call: float  # the whole trainer.test() call, set-up and tear-down included


class TimedCallback(pl.Callback):
    """Forwards the test hooks to ``inner`` (or none) and times them on the main thread."""

    def __init__(self, inner: pl.Callback | None) -> None:
        self.inner = inner
        self.hook: list[float] = []
        self.epoch_start = self.epoch_stop = self.epoch_end = 0.0

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_start = time.perf_counter()
        if self.inner is not None:
            self.inner.on_test_epoch_start(trainer, pl_module)

    def on_test_batch_end(self, trainer: tp.Any, pl_module: tp.Any, *args: tp.Any) -> None:
        if self.inner is None:
            return
        t0 = time.perf_counter()
        self.inner.on_test_batch_end(trainer, pl_module, *args)
        self.hook.append(time.perf_counter() - t0)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        t0 = time.perf_counter()
        if self.inner is not None:
            self.inner.on_test_epoch_end(trainer, pl_module)
        self.epoch_stop = time.perf_counter()
        self.epoch_end = self.epoch_stop - t0

    def on_exception(self, trainer: tp.Any, pl_module: tp.Any, exception: BaseException) -> None:
        if self.inner is not None:
            self.inner.on_exception(trainer, pl_module, exception)

    def teardown(self, trainer: tp.Any, pl_module: tp.Any, stage: str) -> None:
        if self.inner is not None:
            self.inner.teardown(trainer, pl_module, stage)


def run_test_loop(
    model: BenchModel, loader: DataLoader, collector: pl.Callback | None
) -> LoopTimes:
    """One ``Trainer.test`` of ``model`` on ``loader`` with ``collector`` (or none)."""
    timed = TimedCallback(collector)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,
        callbacks=[timed],
    )
    t0 = time.perf_counter()
    trainer.test(model, dataloaders=loader, verbose=False)
    test_call = time.perf_counter() - t0
    return LoopTimes(
        hook=timed.hook,
        epoch_end=timed.epoch_end,
        epoch=timed.epoch_stop - timed.epoch_start,
        test_call=test_call,
    )


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
