"""The user guide builds with warnings as errors, its examples executed (so it never rots)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_docs_build(tmp_path: Path) -> None:
    for module in ("sphinx", "sphinx_gallery", "myst_parser", "matplotlib"):
        pytest.importorskip(module, reason="the docs extra is not installed (pip install .[docs])")
    env = dict(os.environ, TMPDIR=str(tmp_path), MPLBACKEND="agg")  # a private guide cache
    out = tmp_path / "html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "-b",
            "html",
            "-q",
            "docs",
            str(out),
            "-d",
            str(tmp_path / "doctrees"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    for page in ("index", "migrating", "benchmarks", "api", "auto_examples/index"):
        assert (out / f"{page}.html").is_file(), page
    guide = sorted((out / "auto_examples").glob("plot_*.html"))
    assert len(guide) >= 7, guide
    assert list((out / "_images").glob("sphx_glr_plot_04_*.png")), "the error plot is missing"
    api = (out / "api.html").read_text(encoding="utf-8")
    for name in (
        "WindowPredictionCollector",
        "read_predictions",
        "retrieval_set",
        "convert_legacy",
        "Experiment",
        "IncompletePredictionsError",
    ):
        assert f'id="nbstream.{name}"' in api, name
