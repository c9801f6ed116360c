"""``Experiment``: a pydantic config run and cached by exca, saving its test predictions.

``run()`` goes through ``infra.apply`` (exca's ``TaskInfra``): the first call seeds, trains
on any number of devices, tears the training process group down, then tests on global rank
zero only with a dedicated one-device ``Trainer``, adding the
:class:`~nbstream.collector.WindowPredictionCollector` when ``save_test_predictions`` is
set, and returns the test metrics; later calls with the same config are cache hits and
return at once. The predictions live next to exca's cache entry::

    <infra.folder>/<method,version>/<uid>/
        job.pkl, config.yaml, uid.yaml, ...   exca's entry (the returned metrics)
        test_predictions/                     the collector's folder (see nbstream.store)

``save_test_predictions`` is part of the uid, so toggling it makes a new entry and leaves
the other one intact. ``infra`` keeps all of exca's execution options: ``cluster=None``
runs in-process, ``"local"`` in a subprocess, ``"slurm"`` on a cluster through submitit.
"""

from __future__ import annotations

import logging
import os
import time
import typing as tp
from pathlib import Path

import exca
import pydantic

from nbstream.errors import PredictionsNotFoundError
from nbstream.tasks import DataConfig, ModelConfig, VoxelRegression
from nbstream.tasks import Linear as _Linear

__all__ = ["PREDICTIONS_DIR", "Experiment", "TrainerConfig"]

logger = logging.getLogger(__name__)

PREDICTIONS_DIR = "test_predictions"


class TrainerConfig(pydantic.BaseModel):
    """The Lightning ``Trainer`` options an experiment sets (training; testing uses one device).

    ``strategy="auto"`` with ``devices > 1`` trains with DDP: ``"ddp"`` when the processes
    are started by a launcher (Slurm tasks, ``torchrun``), else ``"ddp_spawn"``, which keeps
    the training workers inside ``run()`` so that only this process writes the cache.
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    max_epochs: int = pydantic.Field(default=1, ge=0)
    accelerator: str = "auto"
    devices: int = pydantic.Field(default=1, ge=1)
    num_nodes: int = pydantic.Field(default=1, ge=1)
    strategy: str = "auto"
    precision: str | int = "32-true"
    limit_train_batches: int | float | None = None
    limit_test_batches: int | float | None = None

    def training_strategy(self) -> str:
        if self.devices * self.num_nodes == 1:
            return self.strategy
        launched = any(int(os.environ.get(v, "1")) > 1 for v in ("WORLD_SIZE", "SLURM_NTASKS"))
        if self.strategy == "ddp" and not launched:
            raise ValueError(
                f"trainer.strategy='ddp' with {self.devices * self.num_nodes} devices "
                "re-launches this script once per extra rank, and every copy would write the "
                "experiment's cache; use strategy='auto' (DDP in spawned workers) or start "
                "the processes with torchrun or Slurm tasks"
            )
        if self.strategy != "auto":
            return self.strategy
        return "ddp" if launched else "ddp_spawn"

    def build(self, **overrides: tp.Any) -> tp.Any:
        """A quiet ``lightning.Trainer`` with these options (``overrides`` win)."""
        import lightning.pytorch as pl

        options: dict[str, tp.Any] = {
            "max_epochs": self.max_epochs,
            "accelerator": self.accelerator,
            "devices": self.devices,
            "num_nodes": self.num_nodes,
            "strategy": self.training_strategy(),
            "precision": self.precision,
            "limit_train_batches": self.limit_train_batches,
            "limit_test_batches": self.limit_test_batches,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "enable_checkpointing": False,
            "num_sanity_val_steps": 0,
        }
        options.update(overrides)
        return pl.Trainer(**options)


class Experiment(pydantic.BaseModel):
    """Train and test a decoder; optionally keep every test window's prediction on disk.

    Parameters
    ----------
    seed:
        Seeds Python, numpy and torch (and dataloader workers) before building anything.
    save_test_predictions:
        Stream ``(y_pred, y_true)`` and one metadata row per test window to
        ``infra.uid_folder() / "test_predictions"``; needs ``infra.folder``.
    trainer:
        Lightning options (epochs, accelerator, devices, strategy, precision, limits).
    data:
        The task variant (``task``: ``voxels``, ``classification``, ``retrieval``, ``ctc``).
    model:
        The network (``name``: ``linear``, ``mlp``).
    infra:
        exca's ``TaskInfra``: cache folder, mode, and where to run (``cluster``).
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    seed: int = 0
    save_test_predictions: bool = False
    trainer: TrainerConfig = TrainerConfig()
    data: DataConfig = VoxelRegression()
    model: ModelConfig = _Linear()
    infra: exca.TaskInfra = exca.TaskInfra(version="1")

    @infra.apply
    def run(self) -> dict[str, float]:
        """Train, test and return the test metrics (cached by exca)."""
        predictions = self._predictions_folder(create=True) if self.save_test_predictions else None
        return _train_and_test(self, predictions)

    def test_predictions(self, mmap: bool = True) -> dict[str, tp.Any]:
        """The saved predictions: ``{"metadata": DataFrame, "y_true": ..., "y_pred": ...}``.

        Read-only: it reads what ``run()`` saved (a cache hit is fine) and never starts a
        run. The arrays are read-only memmaps unless ``mmap=False``.
        """
        from nbstream.reader import read_predictions

        if not self.save_test_predictions:
            raise ValueError(
                "this experiment has save_test_predictions=False, so no test predictions "
                "were saved; set save_test_predictions=True and run() again (it is a "
                "separate cache entry: the current one is kept)"
            )
        folder = self._predictions_folder()
        if not folder.exists():
            state = "has not run yet" if self.infra.status() == "not submitted" else "saved none"
            raise PredictionsNotFoundError(
                f"no test predictions in {folder}: this experiment {state}; with "
                "save_test_predictions=True, call run() first (test_predictions() never "
                "starts a run)"
            )
        return read_predictions(folder, mmap=mmap)

    def _predictions_folder(self, create: bool = False) -> Path:
        folder = self.infra.uid_folder(create=create)
        if folder is None:
            raise ValueError(
                "save_test_predictions=True needs a cache folder for the predictions; "
                "configure infra.folder (e.g. Experiment(infra={'folder': 'nbstream-cache'}, "
                "...) or `infra: {folder: ...}` in the YAML)"
            )
        return folder / PREDICTIONS_DIR


def _train_and_test(experiment: Experiment, predictions: Path | None) -> dict[str, float]:
    """The body of ``run()``: fit on every device, then test on global rank zero alone."""
    import lightning.pytorch as pl

    from nbstream.process_group import ReleaseProcessGroup
    from nbstream.tasks.module import Decoder

    pl.seed_everything(experiment.seed, workers=True, verbose=False)
    world = experiment.data.build()
    module = Decoder(experiment.model, experiment.data, world)
    config = experiment.trainer
    train_seconds, is_global_zero = 0.0, True
    if config.max_epochs > 0:
        trainer = config.build(callbacks=[ReleaseProcessGroup()])
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=world.loader("train", shuffle=True))
        # the callback released training's process group in every training process
        train_seconds = time.perf_counter() - start
        is_global_zero = trainer.is_global_zero
    if not is_global_zero:
        return {}
    callbacks = []
    if predictions is not None:
        from nbstream.collector import WindowPredictionCollector

        callbacks.append(WindowPredictionCollector(predictions))
    tester = config.build(devices=1, num_nodes=1, strategy="auto", callbacks=callbacks)
    test_loader = world.loader("test")
    start = time.perf_counter()
    tester.test(module, dataloaders=test_loader, verbose=False)
    test_seconds = time.perf_counter() - start
    results = dict(module.results)
    results.update(
        train_seconds=train_seconds,
        test_seconds=test_seconds,
        test_windows=float(len(test_loader.dataset)),  # type: ignore[arg-type]
    )
    logger.info("test metrics: %s", results)
    return results
