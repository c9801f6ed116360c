"""``python -m bench.bench_collector`` runs end to end on tiny sizes, the queue-put row included."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from bench.bench_collector import main
from bench.workloads import WORKLOADS, QueuePut, make_step


def test_queue_put_hands_every_batch_to_its_thread_and_joins_it() -> None:
    hook = QueuePut()
    hook.on_test_epoch_start(None, None)
    w = WORKLOADS["classif"].scaled(n_windows=4, n_batches=3)
    for i in range(w.n_batches):
        outputs, batch = make_step(w, i, i * w.n_windows)
        hook.on_test_batch_end(None, None, outputs, batch, i)
    hook.on_test_epoch_end(None, None)
    assert hook._queue.empty()
    assert not [t for t in threading.enumerate() if t.name == "queue-put"]


def test_core_bench_quick_run_reports_the_queue_put_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "core.json"
    args = ["--quick", "--repeats", "1", "--out", str(out), "--scratch", str(tmp_path)]
    assert main(args) == 0
    results = json.loads(out.read_text())
    for workload, res in results["loops"].items():
        for name in ("baseline", "nbstream", "queue-put"):
            assert res[name]["hook_median"] > 0, (workload, name)
            assert res[name]["loop"] > 0
    printed = capsys.readouterr().out
    assert printed.count("queue-put") >= len(WORKLOADS)
    assert not list(tmp_path.glob("nbstream-bench-*"))  # scratch cleaned up
