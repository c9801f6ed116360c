"""The neuralbench adapter, against a stand-in package with neuralbench's names."""

from __future__ import annotations

import sys
import types
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nbstream
from nbstream.integrations import neuralbench as adapter
from tests.fake_neuralbench import callbacks as fake_callbacks
from tests.fake_neuralbench import main as fake


@pytest.fixture(autouse=True)
def _restore() -> tp.Iterator[None]:
    yield
    adapter.uninstall(fake)
    adapter.uninstall()


def experiment(folder: Path | None, **changes: tp.Any) -> fake.Experiment:
    infra = {"folder": str(folder)} if folder is not None else {}
    return fake.Experiment(save_test_predictions=True, infra=infra, **changes)


def test_install_swaps_collector_and_reader(tmp_path: Path) -> None:
    original_reader = fake.Experiment.test_predictions
    adapter.install(fake)
    adapter.install(fake)  # idempotent
    assert adapter.installed(fake)
    assert fake.WindowPredictionCollector is nbstream.WindowPredictionCollector
    assert fake_callbacks.WindowPredictionCollector is not nbstream.WindowPredictionCollector
    run = experiment(tmp_path)
    assert run.run() == {"n_windows": 40.0}
    folder = run.infra.uid_folder() / "test_predictions"  # type: ignore[operator]
    assert (folder / "manifest.json").exists() and (folder / "y_pred.npy").exists()
    saved = run.test_predictions()
    assert isinstance(saved["y_pred"], np.memmap)
    assert saved["y_pred"].shape == (40, 3)
    assert list(saved["metadata"].columns) == [
        "timeline",
        "batch_idx",
        "dataloader_idx",
        "subject_id",
        "group",
    ]
    adapter.uninstall(fake)
    assert not adapter.installed(fake)
    assert fake.WindowPredictionCollector is fake_callbacks.WindowPredictionCollector
    assert fake.Experiment.test_predictions is original_reader


def test_same_predictions_as_the_default_path(tmp_path: Path) -> None:
    default = experiment(tmp_path / "default")
    default.run()
    want = default.test_predictions()  # neuralbench's own reader, CacheDict chunks
    adapter.install(fake)
    # a folder written by the default collector before install() still reads
    legacy = default.test_predictions()
    np.testing.assert_array_equal(legacy["y_pred"], want["y_pred"])
    ours = experiment(tmp_path / "nbstream")
    ours.run()
    got = ours.test_predictions(mmap=False)
    for key in ("y_pred", "y_true"):
        np.testing.assert_array_equal(got[key], want[key])
    pd.testing.assert_frame_equal(got["metadata"], want["metadata"], check_dtype=False)


def test_errors_match_neuralbench(tmp_path: Path) -> None:
    adapter.install(fake)
    with pytest.raises(RuntimeError, match=r"configure ``infra.folder``"):
        experiment(None).test_predictions()
    with pytest.raises(ValueError, match="Set save_test_predictions=True and \\(re\\)run"):
        experiment(tmp_path).test_predictions()  # never ran: nothing saved, nothing started
    with pytest.raises(RuntimeError, match="requires an infra cache folder"):
        experiment(None).run()


def test_default_module_is_neuralbench_main(monkeypatch: pytest.MonkeyPatch) -> None:
    package = types.ModuleType("neuralbench")
    monkeypatch.setitem(sys.modules, "neuralbench", package)
    monkeypatch.setitem(sys.modules, "neuralbench.main", fake)
    monkeypatch.setattr(fake, "__name__", "neuralbench.main")
    adapter.install()
    assert adapter.installed()
    assert fake.WindowPredictionCollector is nbstream.WindowPredictionCollector
    adapter.uninstall()
    assert fake.WindowPredictionCollector is fake_callbacks.WindowPredictionCollector


def test_missing_or_mismatched_neuralbench(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "neuralbench", None)  # import fails
    with pytest.raises(ImportError, match="install neuralbench"):
        adapter.install()
    with pytest.raises(RuntimeError, match="has no WindowPredictionCollector, Experiment"):
        adapter.install(types.ModuleType("neuralbench_v9"))
