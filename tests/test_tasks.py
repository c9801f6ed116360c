"""The embedded task variants: workload shapes, batches, metrics, determinism."""

from __future__ import annotations

import typing as tp
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from nbstream import Experiment
from nbstream.tasks import CTC, MLP, Classification, Linear, Retrieval, VoxelRegression
from nbstream.tasks.metrics import TopKRetrieval
from nbstream.tasks.recordings import collate
from nbstream.tasks.variants import _greedy_decode

SIZE: dict[str, tp.Any] = {
    "n_subjects": 3,
    "recordings_per_subject": 2,
    "windows_per_recording": 16,
    "n_stimuli": 6,
    "batch_size": 8,
}
N_TEST = 3 * 16


def run(tmp_path: Path, data: tp.Any, model: tp.Any = None) -> tuple[dict, dict]:
    experiment = Experiment(
        data=data,
        model=model or Linear(),
        save_test_predictions=True,
        trainer={"accelerator": "cpu", "max_epochs": 2},
        infra={"folder": tmp_path},
    )
    return experiment.run(), experiment.test_predictions()


def test_batches_look_like_neuralbench() -> None:
    world = VoxelRegression(n_voxels=5, **SIZE).build()
    windows = world.windows("test")
    assert len(windows) == N_TEST and len(world.windows("train")) == N_TEST
    batch = collate([windows[i] for i in range(4)])
    assert len(batch) == 4
    assert batch.data["x"].shape == (4, 16, 32)
    assert batch.data["y"].shape == (4, 5)
    assert batch.data["subject_id"].tolist() == [0, 0, 0, 0]
    segment = batch.segments[0]
    assert segment.timeline == "sub-00_run-1"
    assert segment.trigger is not None and segment.trigger.text is not None
    assert segment.trigger.text.startswith("stim-")
    assert int(segment.trigger.text[5:]) == int(batch.data["stimulus_id"][0])
    # a window is the same wherever and whenever it is computed
    again = VoxelRegression(n_voxels=5, **SIZE).build().windows("test")[2]
    torch.testing.assert_close(again[0], windows[2][0], rtol=0, atol=0)
    torch.testing.assert_close(again[1], windows[2][1], rtol=0, atol=0)


def test_every_recording_repeats_the_stimuli() -> None:
    world = Classification(**{**SIZE, "windows_per_recording": 13, "n_stimuli": 5}).build()
    for sequence in world.sequences.view(-1, 13):
        counts = torch.bincount(sequence, minlength=5)
        assert counts.min() >= 2 and counts.max() <= 3


def test_classification(tmp_path: Path) -> None:
    metrics, saved = run(tmp_path, Classification(n_classes=3, **SIZE))
    assert 0 <= metrics["test_balanced_accuracy"] <= 1
    assert saved["y_pred"].dtype == np.float32 and saved["y_pred"].shape == (N_TEST, 3)
    assert saved["y_true"].dtype == np.int64 and saved["y_true"].shape == (N_TEST,)
    stimuli = saved["metadata"]["group"].str[5:].astype(int)
    np.testing.assert_array_equal(saved["y_true"], stimuli % 3)


def test_voxels(tmp_path: Path) -> None:
    metrics, saved = run(tmp_path, VoxelRegression(n_voxels=300, **SIZE), MLP(hidden=16))
    assert -1 <= metrics["test_pearson"] <= 1 and metrics["test_mse"] > 0
    assert saved["y_pred"].shape == saved["y_true"].shape == (N_TEST, 300)


def test_retrieval_targets_repeat_per_stimulus(tmp_path: Path) -> None:
    metrics, saved = run(tmp_path, Retrieval(dim=10, top_k=3, **SIZE))
    assert set(metrics) >= {"test_top1", "test_top3"}
    assert metrics["test_top1"] <= metrics["test_top3"]
    assert saved["y_pred"].shape == saved["y_true"].shape == (N_TEST, 10)
    groups = saved["metadata"]["group"]
    assert groups.nunique() == 6 and len(groups) > groups.nunique()
    for _, rows in saved["metadata"].groupby("group").groups.items():
        block = saved["y_true"][np.asarray(rows)]
        assert (block == block[0]).all(), "y_true is the stimulus's embedding, for every window"
    np.testing.assert_allclose(np.linalg.norm(saved["y_true"], axis=1), 1, rtol=1e-5)


def test_ctc_log_probs_and_labels(tmp_path: Path) -> None:
    metrics, saved = run(tmp_path, CTC(vocab=10, label_length=3, **SIZE))
    assert metrics["test_ctc_loss"] >= 0 and metrics["test_cer"] >= 0
    assert saved["y_pred"].shape == (N_TEST, 32, 10)
    np.testing.assert_allclose(np.exp(saved["y_pred"]).sum(-1), 1, rtol=1e-4)
    assert saved["y_true"].dtype == np.int64 and saved["y_true"].shape == (N_TEST, 3)
    assert saved["y_true"].min() >= 1 and saved["y_true"].max() < 10  # 0 is the blank


def test_ctc_needs_room_for_its_labels() -> None:
    with pytest.raises(pydantic.ValidationError, match="label_length=20 needs n_times >= 40"):
        CTC(label_length=20)


def test_greedy_decode_merges_repeats_and_drops_blanks() -> None:
    assert _greedy_decode([0, 1, 1, 0, 1, 2, 2, 0]) == "aab"
    assert _greedy_decode([]) == ""


def test_top_k_retrieval_metric() -> None:
    candidates = torch.eye(4)
    metric = TopKRetrieval(candidates, top_k=2)
    y_pred = torch.tensor([[1.0, 0, 0, 0], [0.1, 0.9, 0.8, 0], [0, 0, 0, 1]])
    metric.update(y_pred, torch.tensor([0, 2, 1]))
    assert float(metric.compute()) == pytest.approx(2 / 3)
    assert TopKRetrieval(candidates, top_k=9).top_k == 4


def test_configs_are_named_in_yaml() -> None:
    experiment = Experiment.model_validate(
        {"data": {"task": "ctc", "vocab": 5}, "model": {"name": "mlp", "hidden": 7}}
    )
    assert isinstance(experiment.data, CTC) and experiment.data.vocab == 5
    assert isinstance(experiment.model, MLP) and experiment.model.hidden == 7
    with pytest.raises(pydantic.ValidationError, match="does not match any of the expected tags"):
        Experiment.model_validate({"data": {"task": "nope"}})
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        Experiment.model_validate({"model": {"name": "linear", "hiden": 3}})
