"""``bench/cli.py`` runs end to end on tiny sizes and writes a consistent report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.report import check_goals, render


def test_bench_cli_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "results.json", tmp_path / "plot.png"
    args = ["--quick", "--workload", "classif", "--sizes", "64", "--throughput-gb", "0.01"]
    assert main([*args, "--out", str(out), "--plot", str(png), "--scratch", str(tmp_path)]) == 0
    results = json.loads(out.read_text())
    rows = results["workloads"]["classif"]["sizes"]
    assert [row["n"] for row in rows] == [64]
    for row in rows:
        assert row["metric_equal"] is True  # both collectors saved the same numbers
        for name in ("baseline", "nbstream"):
            assert row[name]["disk_bytes"] > 0
            assert row[name]["read_peak_rss_growth"] > 0
            assert 0 <= row[name]["metric"] <= 1
    assert {"disk (write+fsync)", "baseline", "nbstream"} <= set(results["throughput"])
    assert png.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "| classif | 64 |" in printed and "Goals:" in printed
    assert render(results).count("| classif |") == 3
    assert [g["goal"] for g in check_goals(results)][-1].startswith("read-back peak RSS")
    assert not list(tmp_path.glob("nbstream-bench-*"))  # scratch cleaned up


def test_bench_cli_rejects_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--sizes", "ten"])
    assert "window counts" in capsys.readouterr().err
