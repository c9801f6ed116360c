"""The ``nbstream`` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nbstream.cli import main


def test_run_saves_and_summarizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "test_predictions"
    assert main(["run", "--folder", str(folder), "--windows", "100", "--voxels", "17"]) == 0
    out = capsys.readouterr().out
    assert "windows                       100" in out
    assert "float32 (100, 17)" in out
    assert np.load(folder / "y_pred.npy", mmap_mode="r").shape == (100, 17)


def test_run_default_from_a_fresh_directory(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nbstream.cli", "run", "--windows", "64", "--voxels", "8"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "nbstream-cache" / "test_predictions" / "manifest.json").exists()


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
