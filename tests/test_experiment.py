"""``nbstream.Experiment``: exca caching, training, testing on one device, saved predictions."""

from __future__ import annotations

import typing as tp
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from nbstream import Experiment, PredictionsNotFoundError
from nbstream.experiment import TrainerConfig

SMALL: dict[str, tp.Any] = {
    "trainer": {"accelerator": "cpu", "max_epochs": 1},
    "data": {
        "task": "voxels",
        "n_voxels": 12,
        "n_subjects": 2,
        "recordings_per_subject": 2,
        "windows_per_recording": 20,
        "n_stimuli": 8,
        "batch_size": 8,
    },
}
TEST_WINDOWS = 2 * 20  # the last recording of each of the 2 subjects


def small(folder: Path | None, **changes: tp.Any) -> Experiment:
    config: dict[str, tp.Any] = {**SMALL, **changes}
    if folder is not None:
        config["infra"] = {"folder": str(folder), **config.get("infra", {})}
    return Experiment.model_validate(config)


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per ``Trainer.fit`` call in this process."""
    calls: list[int] = []
    original = pl.Trainer.fit

    def counting(self: pl.Trainer, *args: tp.Any, **kwargs: tp.Any) -> None:
        calls.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "fit", counting)
    return calls


def test_run_trains_tests_saves_then_hits_the_cache(tmp_path: Path, fits: list[int]) -> None:
    first = small(tmp_path, save_test_predictions=True)
    metrics = first.run()
    assert len(fits) == 1
    assert set(metrics) == {
        "test_pearson",
        "test_mse",
        "train_seconds",
        "test_seconds",
        "test_windows",
    }
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["test_windows"] == TEST_WINDOWS
    folder = first.infra.uid_folder()
    assert folder is not None and (folder / "test_predictions" / "manifest.json").exists()
    saved = first.test_predictions()
    assert isinstance(saved["y_pred"], np.memmap)
    assert saved["y_pred"].shape == saved["y_true"].shape == (TEST_WINDOWS, 12)
    meta = saved["metadata"]
    assert list(meta.columns) == ["timeline", "batch_idx", "dataloader_idx", "subject_id", "group"]
    assert sorted(meta["timeline"].unique()) == ["sub-00_run-1", "sub-01_run-1"]
    assert meta["subject_id"].nunique() == 2
    assert meta["group"].str.fullmatch(r"stim-\d{3}").all()

    again = small(tmp_path, save_test_predictions=True)  # a new object, same config
    assert again.infra.status() == "completed"
    assert again.run() == metrics
    assert len(fits) == 1, "a cache hit must not train"
    reread = again.test_predictions(mmap=False)
    assert not isinstance(reread["y_pred"], np.memmap)
    for key in ("y_pred", "y_true"):
        np.testing.assert_array_equal(reread[key], saved[key])


def test_toggling_the_flag_makes_a_new_entry(tmp_path: Path, fits: list[int]) -> None:
    saving = small(tmp_path, save_test_predictions=True)
    saving.run()
    before = saving.test_predictions(mmap=False)
    plain = small(tmp_path)
    assert plain.infra.uid_folder() != saving.infra.uid_folder()
    assert plain.run().keys() == saving.run().keys()
    assert len(fits) == 2
    assert not (plain.infra.uid_folder() / "test_predictions").exists()  # type: ignore[operator]
    with pytest.raises(ValueError, match=r"set save_test_predictions=True and run\(\) again"):
        plain.test_predictions()
    after = small(tmp_path, save_test_predictions=True).test_predictions()
    np.testing.assert_array_equal(after["y_pred"], before["y_pred"])


def test_saving_without_a_folder_says_to_configure_it(fits: list[int]) -> None:
    experiment = small(None, save_test_predictions=True)
    with pytest.raises(ValueError, match=r"configure infra\.folder"):
        experiment.run()
    assert fits == [], "the error comes before any training"
    with pytest.raises(ValueError, match=r"configure infra\.folder"):
        experiment.test_predictions()


def test_without_a_folder_and_no_saving_runs_in_memory(fits: list[int]) -> None:
    assert small(None).run()["test_windows"] == TEST_WINDOWS


def test_test_predictions_never_starts_a_run(tmp_path: Path, fits: list[int]) -> None:
    experiment = small(tmp_path, save_test_predictions=True)
    with pytest.raises(PredictionsNotFoundError, match=r"has not run yet.*call run\(\) first"):
        experiment.test_predictions()
    assert fits == []
    assert experiment.infra.status() == "not submitted"


def test_eval_only(tmp_path: Path, fits: list[int]) -> None:
    experiment = small(
        tmp_path, save_test_predictions=True, trainer={"accelerator": "cpu", "max_epochs": 0}
    )
    metrics = experiment.run()
    assert fits == []
    assert metrics["train_seconds"] == 0.0
    assert len(experiment.test_predictions()["y_pred"]) == TEST_WINDOWS


def test_limit_test_batches_saves_what_was_tested(tmp_path: Path) -> None:
    trainer = {"accelerator": "cpu", "max_epochs": 0, "limit_test_batches": 2}
    experiment = small(tmp_path, save_test_predictions=True, trainer=trainer)
    assert experiment.run()["test_windows"] == TEST_WINDOWS  # the set's size
    assert len(experiment.test_predictions()["y_pred"]) == 16  # 2 batches of 8


def test_runs_are_reproducible_from_the_seed(tmp_path: Path) -> None:
    a = small(tmp_path / "a", save_test_predictions=True)
    b = small(tmp_path / "b", save_test_predictions=True)
    a.run()
    b.run()
    np.testing.assert_array_equal(a.test_predictions()["y_pred"], b.test_predictions()["y_pred"])
    c = small(tmp_path / "a", save_test_predictions=True, seed=1)
    c.run()
    assert not np.array_equal(a.test_predictions()["y_pred"], c.test_predictions()["y_pred"])


def test_trainer_strategy_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert TrainerConfig().training_strategy() == "auto"
    assert TrainerConfig(devices=2).training_strategy() == "ddp_spawn"
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert TrainerConfig(devices=2).training_strategy() == "ddp"
    assert TrainerConfig(devices=2, strategy="ddp").training_strategy() == "ddp"


def test_cache_key_holds_the_config(tmp_path: Path) -> None:
    base = small(tmp_path)
    uid = base.infra.uid()
    assert "save_test_predictions" not in uid  # the default is left out of the key
    assert "save_test_predictions=True" in small(tmp_path, save_test_predictions=True).infra.uid()
    data = {**SMALL["data"], "task": "retrieval"}
    data.pop("n_voxels")
    assert "task=retrieval" in small(tmp_path, data=data).infra.uid()
    cluster = small(tmp_path, infra={"cluster": "local", "timeout_min": 5})
    assert cluster.infra.uid() == uid, "where it runs is not part of the key"


def test_runs_in_a_subprocess_through_exca(tmp_path: Path, fits: list[int]) -> None:
    experiment = small(
        tmp_path, save_test_predictions=True, infra={"cluster": "local", "timeout_min": 5}
    )
    metrics = experiment.run()
    assert fits == [], "trained in exca's subprocess, not here"
    assert metrics["test_windows"] == TEST_WINDOWS
    saved = experiment.test_predictions()
    assert saved["y_pred"].shape == (TEST_WINDOWS, 12)
    in_process = small(tmp_path / "here", save_test_predictions=True)
    in_process.run()
    np.testing.assert_allclose(
        saved["y_pred"], in_process.test_predictions()["y_pred"], rtol=1e-5, atol=1e-6
    )


def test_two_process_training_then_one_device_test(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """DDP over 2 CPU processes (gloo), then a test on one device: every window once."""
    trainer = {"accelerator": "cpu", "devices": 2, "max_epochs": 2}
    experiment = small(tmp_path, save_test_predictions=True, trainer=trainer)
    metrics = experiment.run()
    out, err = capfd.readouterr()
    assert "distributed_backend=gloo" in out + err
    assert "Starting with 2 processes" in out + err
    assert not torch.distributed.is_initialized()
    assert metrics["test_windows"] == TEST_WINDOWS
    saved = experiment.test_predictions()
    world = experiment.data.build()
    windows = world.windows("test")
    expected_y = torch.stack([windows[i][1] for i in range(len(windows))]).numpy()
    np.testing.assert_array_equal(saved["y_true"], expected_y)  # each window once, in order
    groups = [windows[i][2].trigger.text for i in range(len(windows))]  # type: ignore[union-attr]
    assert saved["metadata"]["group"].tolist() == groups
    assert saved["metadata"]["dataloader_idx"].eq(0).all()


def test_in_process_ddp_with_several_devices_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from nbstream.experiment import TrainerConfig

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    with pytest.raises(ValueError, match="strategy='ddp' with 2 devices re-launches"):
        TrainerConfig(devices=2, strategy="ddp").training_strategy()
    assert TrainerConfig(devices=2).training_strategy() == "ddp_spawn"
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert TrainerConfig(devices=2, strategy="ddp").training_strategy() == "ddp"
