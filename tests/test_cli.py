"""The ``nbstream`` command."""

from __future__ import annotations

import os
import subprocess
import sys
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nbstream import Experiment, WindowPredictionCollector
from nbstream.cli import DEFAULT_CONFIG, main
from nbstream.demo import Regressor, loader, make_trainer

SMALL: dict[str, tp.Any] = {
    "seed": 3,
    "save_test_predictions": True,
    "trainer": {"accelerator": "cpu", "max_epochs": 1},
    "data": {
        "task": "classification",
        "n_subjects": 2,
        "recordings_per_subject": 2,
        "windows_per_recording": 12,
        "n_stimuli": 6,
        "batch_size": 8,
    },
    "model": {"name": "mlp", "hidden": 8},
}


def write_config(tmp_path: Path, config: dict[str, tp.Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_from_yaml_then_cache_hit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, {**SMALL, "infra": {"folder": str(tmp_path / "cache")}})
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("nbstream: Classification x MLP (trained and tested in ")
    assert "test_balanced_accuracy" in out
    assert "windows                        24" in out
    assert "y_pred                         float32 (24, 4)" in out
    assert "y_true                         int64 (24,)" in out
    assert "subjects / timelines / groups  2 / 2 / 6" in out
    assert "/s over the test loop" in out
    assert main(["run", str(path)]) == 0
    assert "(cache hit, returned at once)" in capsys.readouterr().out


def test_set_and_folder_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, SMALL)
    args = ["run", str(path), "--folder", str(tmp_path / "c"), "-s", "data.n_classes=3"]
    assert main([*args, "-s", "trainer.max_epochs=0"]) == 0
    assert "float32 (24, 3)" in capsys.readouterr().out
    assert any((tmp_path / "c").glob("*/*n_classes=3*/test_predictions/manifest.json"))


def test_relative_folder_is_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, {**SMALL, "infra": {"folder": "rel"}})
    assert main(["run", str(path), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["infra"]["folder"] == str(tmp_path / "rel")


def test_yaml_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert yaml.safe_load(text)["data"] == DEFAULT_CONFIG["data"]
    path = tmp_path / "default.yaml"
    path.write_text(text)
    assert main(["run", str(path), "--print-config"]) == 0
    assert capsys.readouterr().out == text
    experiment = Experiment.model_validate(yaml.safe_load(text))
    dumped = experiment.model_dump(mode="json")
    again = Experiment.model_validate(yaml.safe_load(yaml.safe_dump(dumped)))
    assert again.infra.uid() == experiment.infra.uid()
    assert again.data == experiment.data and again.trainer == experiment.trainer


def test_bad_config_lists_field_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = {
        **SMALL,
        "trainer": {"devices": 0, "max_epoch": 2},
        "data": {"task": "voxels", "n_voxels": -1},
    }
    assert main(["run", str(write_config(tmp_path, config))]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert err.startswith(
        f"nbstream run: error: invalid config {tmp_path / 'config.yaml'}: 3 errors"
    )
    assert "  trainer.devices: Input should be greater than or equal to 1 (got 0)" in err
    assert "  trainer.max_epoch: Extra inputs are not permitted (got 2)" in err
    assert "  data.voxels.n_voxels: Input should be greater than or equal to 1 (got -1)" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "holds a list; expected a mapping"),
        ("seed: [", "is not valid YAML"),
        ("data: {task: eeg}", "data: Input tag 'eeg' found using 'task' does not match"),
    ],
)
def test_unusable_configs_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert main(["run", str(path)]) == 2
    assert message in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["run", "-s", "oops"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_bad_config_has_no_traceback(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"seed": "many"})
    done = subprocess.run(
        [sys.executable, "-m", "nbstream.cli", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "seed: Input should be a valid integer" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_default_from_a_fresh_directory(tmp_path: Path) -> None:
    """The README's main job: ``nbstream run`` with no argument, in a fresh directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    done = subprocess.run(
        [sys.executable, "-m", "nbstream.cli", "run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "test_pearson" in done.stdout
    assert "float32 (1024, 20484)" in done.stdout
    assert "write throughput" in done.stdout
    (manifest,) = (tmp_path / "nbstream-cache").glob("*/*/test_predictions/manifest.json")
    assert np.load(manifest.parent / "y_pred.npy", mmap_mode="r").shape == (1024, 20_484)
    assert "GPU available" not in done.stderr  # Lightning's chatter is silenced


def test_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experiment = Experiment.model_validate({**SMALL, "infra": {"folder": str(tmp_path)}})
    experiment.run()
    uid_folder = experiment.infra.uid_folder()
    assert uid_folder is not None
    assert main(["show", str(uid_folder), "--head", "3"]) == 0
    out = capsys.readouterr().out
    assert f"nbstream: {uid_folder / 'test_predictions'}" in out
    assert "layout         nbstream, format version 1" in out
    assert "complete       yes" in out
    assert "status         finished" in out
    assert "windows        24" in out
    assert "y_pred         float32 (24, 4)  [y_pred.npy]" in out
    assert "subject_id      int64, 2 distinct" in out
    assert "metadata head (3 of 24 rows)" in out
    assert "windows per subject_id: 0: 12, 1: 12" in out
    assert "windows per group: stim-000: 4, stim-001: 4, stim-002: 4, ... (6 in all)" in out
    assert "windows per timeline: sub-00_run-1: 12, sub-01_run-1: 12" in out


def test_show_a_stopped_run_and_a_legacy_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.baseline import DefaultCollector

    class Breaks(Regressor):
        def test_step(self, batch, batch_idx, dataloader_idx=0):  # type: ignore[no-untyped-def]
            if batch_idx == 2:
                raise RuntimeError("out of memory")
            return super().test_step(batch, batch_idx)

    collector = WindowPredictionCollector(tmp_path / "stopped")
    with pytest.raises(RuntimeError):
        make_trainer(callbacks=[collector]).test(Breaks(), dataloaders=loader(40), verbose=False)
    assert main(["show", str(tmp_path / "stopped")]) == 0
    out = capsys.readouterr().out
    assert "status         stopped (RuntimeError: out of memory)" in out
    assert "windows        16" in out

    legacy = DefaultCollector(tmp_path / "legacy")
    make_trainer(callbacks=[legacy]).test(Regressor(), dataloaders=loader(20), verbose=False)
    assert main(["show", str(tmp_path / "legacy")]) == 0
    out = capsys.readouterr().out
    assert "default collector (exca CacheDict chunks, read into RAM)" in out
    assert "y_pred         float32 (20, 3)" in out


def test_show_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.startswith("nbstream show: error: ")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "y_pred.npy.partial").write_bytes(b"x")
    assert main(["show", str(tmp_path / "partial")]) == 1
    assert "interrupted run" in capsys.readouterr().err


def test_unknown_command_exits_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_convert_summarizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_convert import _write_legacy

    src = _write_legacy(tmp_path / "preds", [4, 3], pred=(torch.float16, (6,)))
    assert main(["convert", str(src), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    (line,) = captured.out.splitlines()
    assert line.startswith(f"nbstream: converted {src} -> {tmp_path / 'preds-nbstream'}: 7 windows")
    assert "y_pred float16 (7, 6), y_true int64 (7,)" in line
    assert line.endswith(" s")
    assert (tmp_path / "preds-nbstream" / "manifest.json").exists()


def test_convert_errors_exit_1_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "preds").mkdir()
    (tmp_path / "preds" / "notes.txt").write_text("x")
    done = subprocess.run(
        [sys.executable, "-m", "nbstream.cli", "convert", str(tmp_path / "preds")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("nbstream convert: error: ")
    assert "holds no default-collector predictions" in done.stderr
    assert "Traceback" not in done.stderr


def test_bench_hands_its_arguments_to_the_checkout_runner(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "--help"])
    assert info.value.code == 0
    assert "usage: bench" in capsys.readouterr().out
