"""``bench/gpu.py`` runs anywhere: it measures on CUDA and skips cleanly without it."""

from __future__ import annotations

import pytest
import torch

from bench import gpu


def test_quick_run_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu.main(["--quick", "--compute", "1"]) == 0
    out = capsys.readouterr().out
    if torch.cuda.is_available():
        assert "nbstream-nofsync" in out
    else:
        assert "no CUDA device here" in out
