"""``Experiment``: neuralbench's test-prediction path, with its names and control flow."""

from __future__ import annotations

import typing as tp

import numpy as np
import pydantic
import torch
from exca import TaskInfra
from exca.cachedict import CacheDict

from nbstream.demo import Regressor, loader, make_trainer

from .callbacks import WindowPredictionCollector


class Experiment(pydantic.BaseModel):
    n_windows: int = 40
    n_outputs: int = 3
    seed: int = 0
    save_test_predictions: bool = False
    infra: TaskInfra = TaskInfra(version="1")

    _TEST_PREDICTIONS_DIR: tp.ClassVar[str] = "test_predictions"

    def setup_trainer(self, is_test: bool = False) -> tp.Any:
        callbacks: list[tp.Any] = []
        if is_test and self.save_test_predictions:
            uid_folder = self.infra.uid_folder()
            if uid_folder is None:
                raise RuntimeError(
                    "save_test_predictions=True requires an infra cache folder; configure "
                    "``infra.folder``."
                )
            callbacks.append(
                WindowPredictionCollector(folder=uid_folder / self._TEST_PREDICTIONS_DIR)
            )
        return make_trainer(callbacks=callbacks)

    @infra.apply
    def run(self) -> dict[str, float]:
        torch.manual_seed(self.seed)
        trainer = self.setup_trainer(is_test=True)
        data = loader(self.n_windows, batch_size=8, n_outputs=self.n_outputs, seed=self.seed)
        trainer.test(Regressor(n_outputs=self.n_outputs), dataloaders=data, verbose=False)
        return {"n_windows": float(self.n_windows)}

    def test_predictions(self) -> dict[str, tp.Any]:
        uid_folder = self.infra.uid_folder()
        if uid_folder is None:
            raise RuntimeError(
                "Cannot read test predictions without an infra cache folder; "
                "configure ``infra.folder``."
            )
        cache: CacheDict = CacheDict(folder=uid_folder / self._TEST_PREDICTIONS_DIR)
        keys = set(cache.keys())
        if not keys:
            raise ValueError(
                "Test predictions are unavailable. Set save_test_predictions=True and (re)run "
                "the experiment (toggling the flag yields a fresh cache entry)."
            )

        def _concat(prefix: str) -> np.ndarray:
            chunks = sorted(key for key in keys if key.startswith(prefix))
            return np.concatenate([np.asarray(cache[key]) for key in chunks], axis=0)

        collector = WindowPredictionCollector
        return {
            "metadata": cache[collector._METADATA_KEY],
            "y_true": _concat(collector._Y_TRUE_PREFIX),
            "y_pred": _concat(collector._Y_PRED_PREFIX),
        }
