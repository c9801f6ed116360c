"""A minimal real test loop for the end-to-end tests, benchmarks and examples.

Windows of three synthetic subjects, batches shaped like neuralbench's (``.segments`` with
``timeline`` and ``trigger.text``, ``.data["subject_id"]``), a linear decoder that can
misbehave on purpose, and a quiet CPU trainer. The ``nbstream run`` default (training,
task variants, exca caching) lives in :mod:`nbstream.tasks` and :mod:`nbstream.experiment`.
"""

from __future__ import annotations

import typing as tp

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from nbstream.testing import Batch, Segment, Trigger

__all__ = ["Regressor", "WindowDataset", "collate", "loader", "make_trainer"]

N_FEATURES = 6


class WindowDataset(Dataset):
    """``n`` windows over three synthetic subjects, with stimulus triggers in five groups."""

    def __init__(self, n: int, *, n_outputs: int = 3, seed: int = 0, prefix: str = "rec") -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, N_FEATURES, generator=generator)
        self.y = torch.randn(n, n_outputs, generator=generator)
        self.subjects = torch.arange(n) % 3
        self.prefix = prefix

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, Segment, int]:
        segment = Segment(
            timeline=f"{self.prefix}-sub{int(self.subjects[i])}",
            trigger=Trigger(text=f"stim-{i % 5}", category="word"),
        )
        return self.x[i], self.y[i], segment, int(self.subjects[i])


def collate(items: list[tuple[tp.Any, ...]]) -> Batch:
    """Stack windows into a neuralbench-shaped batch."""
    x, y, segments, subjects = zip(*items, strict=True)
    return Batch(
        segments=list(segments),
        data={"x": torch.stack(x), "y": torch.stack(y), "subject_id": torch.tensor(subjects)},
    )


def loader(n: int, batch_size: int = 8, **kwargs: tp.Any) -> DataLoader:
    return DataLoader(WindowDataset(n, **kwargs), batch_size=batch_size, collate_fn=collate)


class Regressor(pl.LightningModule):
    """A linear decoder; ``mutate_outputs`` reuses one output buffer across steps (a model
    bug nbstream must not turn into silently wrong files)."""

    def __init__(self, n_outputs: int = 3, mutate_outputs: bool = False) -> None:
        super().__init__()
        self.net = torch.nn.Linear(N_FEATURES, n_outputs)
        self.mutate_outputs = mutate_outputs
        self.buffer: torch.Tensor | None = None

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> tp.Any:
        y_pred = self.net(batch.data["x"])
        if self.mutate_outputs:
            if self.buffer is None or self.buffer.shape != y_pred.shape:
                self.buffer = torch.empty_like(y_pred)
            self.buffer.copy_(y_pred)
            y_pred = self.buffer
        return y_pred, batch.data["y"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def make_trainer(**kwargs: tp.Any) -> pl.Trainer:
    """A quiet single-CPU trainer."""
    options: dict[str, tp.Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
    }
    options.update(kwargs)
    return pl.Trainer(**options)
