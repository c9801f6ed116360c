"""End to end through a real ``lightning.Trainer.test`` on CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.baseline import DefaultCollector, read_default
from nbstream import (
    IncompletePredictionsError,
    InPlaceChangeError,
    StoppedEarlyWarning,
    WindowPredictionCollector,
    read_predictions,
)
from nbstream.demo import Regressor, WindowDataset, loader, make_trainer


def expected_predictions(model: Regressor, datasets: list[WindowDataset]) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model.net(d.x).numpy() for d in datasets])


def test_two_dataloaders_with_growth(tmp_path: Path, reservations: list[int]) -> None:
    model = Regressor()
    # The first batch has 2 windows, so the capacity estimate (batches x 2) is too small.
    loaders = [loader(21, batch_size=2, seed=1, prefix="a"), loader(70, batch_size=16, seed=2)]
    collector = WindowPredictionCollector(tmp_path / "preds")
    make_trainer(callbacks=[collector]).test(model, dataloaders=loaders, verbose=False)

    preds = read_predictions(tmp_path / "preds")
    datasets = [dl.dataset for dl in loaders]
    assert isinstance(preds["y_pred"], np.memmap)
    np.testing.assert_array_equal(preds["y_pred"], expected_predictions(model, datasets))
    np.testing.assert_array_equal(preds["y_true"], torch.cat([d.y for d in datasets]).numpy())
    meta = preds["metadata"]
    assert list(meta.columns) == ["timeline", "batch_idx", "dataloader_idx", "subject_id", "group"]
    assert meta["dataloader_idx"].tolist() == [0] * 21 + [1] * 70
    assert meta["batch_idx"].tolist()[:4] == [0, 0, 1, 1]
    assert meta["group"].tolist()[:6] == [
        "stim-0",
        "stim-1",
        "stim-2",
        "stim-3",
        "stim-4",
        "stim-0",
    ]
    assert max(reservations) > min(reservations), "the arrays must have grown"


def test_same_loop_matches_the_default_collector(tmp_path: Path) -> None:
    model = Regressor()
    loaders = [loader(37, batch_size=8, seed=3), loader(12, batch_size=5, seed=4, prefix="b")]
    default = DefaultCollector(tmp_path / "default")
    ours = WindowPredictionCollector(tmp_path / "nbstream")
    make_trainer(callbacks=[default, ours]).test(model, dataloaders=loaders, verbose=False)

    want = read_default(tmp_path / "default")
    got = read_predictions(tmp_path / "nbstream")
    assert set(got) == set(want) == {"metadata", "y_true", "y_pred"}
    for key in ("y_true", "y_pred"):
        assert got[key].dtype == want[key].dtype
        np.testing.assert_array_equal(got[key], want[key])
    pd.testing.assert_frame_equal(got["metadata"], want["metadata"], check_dtype=False)
    assert [str(t) for t in got["metadata"].dtypes] == [str(t) for t in want["metadata"].dtypes]
    # and the legacy folder reads back identically through nbstream's reader
    legacy = read_predictions(tmp_path / "default")
    np.testing.assert_array_equal(legacy["y_pred"], want["y_pred"])
    pd.testing.assert_frame_equal(legacy["metadata"], want["metadata"])


def test_rerun_clears_the_folder(tmp_path: Path) -> None:
    collector = WindowPredictionCollector(tmp_path)
    trainer = make_trainer(callbacks=[collector])
    trainer.test(Regressor(), dataloaders=loader(30), verbose=False)
    model = Regressor()
    trainer.test(model, dataloaders=loader(9, seed=7), verbose=False)
    preds = read_predictions(tmp_path)
    assert len(preds["y_pred"]) == 9
    np.testing.assert_array_equal(
        preds["y_pred"], expected_predictions(model, [WindowDataset(9, seed=7)])
    )


def test_output_buffer_reused_under_inference_mode_is_saved_as_seen(tmp_path: Path) -> None:
    # Lightning tests under torch.inference_mode: torch cannot track changes, so the
    # writer copies; the saved rows are what each hook saw, not the last buffer content.
    model = Regressor(mutate_outputs=True)
    collector = WindowPredictionCollector(tmp_path)
    make_trainer(callbacks=[collector]).test(model, dataloaders=loader(40), verbose=False)
    preds = read_predictions(tmp_path)
    np.testing.assert_array_equal(preds["y_pred"], expected_predictions(model, [WindowDataset(40)]))


def test_output_buffer_reused_without_inference_mode_raises(tmp_path: Path) -> None:
    model = Regressor(mutate_outputs=True)
    collector = WindowPredictionCollector(tmp_path)
    trainer = make_trainer(callbacks=[collector], inference_mode=False)
    with pytest.raises(InPlaceChangeError, match=r"y_pred returned for batch 0 of dataloader 0"):
        trainer.test(model, dataloaders=loader(40), verbose=False)
    with pytest.warns(StoppedEarlyWarning, match="InPlaceChangeError"):
        preds = read_predictions(tmp_path)
    assert len(preds["y_pred"]) == 0  # the first batch was already suspect


def test_bad_output_keeps_what_was_written(tmp_path: Path) -> None:
    class BreaksAtBatch3(Regressor):
        def test_step(self, batch, batch_idx, dataloader_idx=0):  # type: ignore[no-untyped-def]
            y_pred, y_true = super().test_step(batch, batch_idx)
            return (y_pred[:-1], y_true) if batch_idx == 3 else (y_pred, y_true)

    model = BreaksAtBatch3()
    collector = WindowPredictionCollector(tmp_path)
    with pytest.raises(ValueError, match="y_pred has 7 rows but the batch has 8 segments"):
        make_trainer(callbacks=[collector]).test(model, dataloaders=loader(64), verbose=False)
    with pytest.warns(StoppedEarlyWarning):
        preds = read_predictions(tmp_path)
    np.testing.assert_array_equal(
        preds["y_pred"], expected_predictions(model, [WindowDataset(64)])[:24]
    )
    assert preds["metadata"]["batch_idx"].max() == 2


KILL_SCRIPT = """
import sys, time, torch
sys.path[:0] = [{root!r}]
from nbstream.demo import Regressor, loader, make_trainer
from nbstream import WindowPredictionCollector

class Slow(Regressor):
    def test_step(self, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 5:
            open({marker!r}, "w").close()
        time.sleep(0.02)
        return super().test_step(batch, batch_idx)

collector = WindowPredictionCollector({folder!r})
make_trainer(callbacks=[collector]).test(Slow(), dataloaders=loader(100000), verbose=False)
"""


def test_sigkill_mid_test_leaves_an_interrupted_folder(tmp_path: Path) -> None:
    marker, folder = tmp_path / "started", tmp_path / "preds"
    root = str(Path(__file__).resolve().parents[1])
    script = KILL_SCRIPT.format(root=root, marker=str(marker), folder=str(folder))
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)])
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, "the test process ended early"
            assert time.monotonic() < deadline, "the test process never reached batch 5"
            time.sleep(0.05)
        time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert any(p.name.endswith(".partial") for p in folder.iterdir())
    with pytest.raises(IncompletePredictionsError, match="interrupted"):
        read_predictions(folder)
