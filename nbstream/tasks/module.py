"""``Decoder``: the Lightning module of the embedded task (a model config plus a task).

``test_step`` returns ``(y_pred, y_true)``, the pair the collector saves, and updates the
task's torchmetrics; their values are in ``results`` after the test epoch.
"""

from __future__ import annotations

import typing as tp

import lightning.pytorch as pl
import torch
from torchmetrics import Metric

from nbstream.tasks.models import ModelConfig
from nbstream.tasks.recordings import Recordings
from nbstream.tasks.variants import SyntheticTask

__all__ = ["Decoder"]


class Decoder(pl.LightningModule):
    """Train ``model`` on ``task``'s loss; test with its metrics."""

    def __init__(self, model: ModelConfig, task: SyntheticTask, world: Recordings) -> None:
        super().__init__()
        self.model_config = model
        self.task = task
        self.net = model.build((task.n_channels, task.n_times), task.output_shape)
        self.test_metrics = torch.nn.ModuleDict(task.metrics(world))
        self.results: dict[str, float] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tp.Any, batch_idx: int) -> torch.Tensor:
        return self.task.loss(self(batch.data["x"]), batch.data["y"])

    def on_test_epoch_start(self) -> None:
        for metric in self._metrics().values():
            metric.reset()

    def test_step(  # type: ignore[override]  # the collector's (y_pred, y_true) pair
        self, batch: tp.Any, batch_idx: int, dataloader_idx: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y_pred = self.task.predict(self(batch.data["x"]))
        y_true = batch.data["y"]
        self.task.update(self._metrics(), y_pred, y_true, batch)
        return y_pred, y_true

    def on_test_epoch_end(self) -> None:
        self.results = {
            f"test_{name}": float(metric.compute().float().mean())
            for name, metric in self._metrics().items()
        }

    def _metrics(self) -> dict[str, Metric]:
        return {name: tp.cast(Metric, metric) for name, metric in self.test_metrics.items()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        config = self.model_config
        return torch.optim.AdamW(self.parameters(), lr=config.lr, weight_decay=config.weight_decay)
