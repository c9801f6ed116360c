"""One short check for a CUDA machine: nbstream's GPU path against ``.cpu()`` per batch.

For each workload, with tensors produced on the GPU by a model forward each batch:

* **hook** — main-thread ``on_test_batch_end`` latency (median, p99): the default
  collector's ``.detach().cpu().numpy()`` + chunk write against nbstream's non-blocking copy
  into pooled pinned memory on a side stream;
* **loop** — test-loop wall time with each collector divided by the loop without one.

Run ``python bench/gpu.py`` (``--quick`` for a smoke run). Without CUDA it says so and exits
0, so it is safe anywhere.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import typing as tp
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.workloads import WORKLOADS, make_collector
from nbstream.testing import FakeTrainer, make_batch

COLLECTORS = ("baseline", "nbstream-nofsync")


def _gpu_loop(
    name: str | None, workload: tp.Any, n_batches: int, folder: Path, compute: int
) -> tuple[float, list[float]]:
    """One simulated test epoch on the GPU: seconds, and hook latencies in ms."""
    device = torch.device("cuda")
    weight = torch.randn(2048, 2048, device=device)
    trainer = FakeTrainer(num_test_batches=[n_batches])
    collector = make_collector(name, folder) if name else None
    batches = [
        make_batch(workload.n_windows, start=i * workload.n_windows) for i in range(n_batches)
    ]
    if collector is not None:
        collector.on_test_epoch_start(trainer, None)
    latencies: list[float] = []
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(n_batches):
        x = torch.randn(256, 2048, device=device)
        for _ in range(compute):
            x = torch.tanh(x @ weight)
        y_pred = (
            torch.randn(workload.n_windows, *workload.pred_shape, device=device).to(
                workload.pred_dtype
            )
            + x.mean()
        )
        y_true = torch.zeros(workload.n_windows, *workload.true_shape, device=device).to(
            workload.true_dtype
        )
        if collector is not None:
            hook_start = time.perf_counter()
            collector.on_test_batch_end(trainer, None, (y_pred, y_true), batches[i], i)
            latencies.append((time.perf_counter() - hook_start) * 1e3)
    if collector is not None:
        collector.on_test_epoch_end(trainer, None)
    torch.cuda.synchronize()
    return time.perf_counter() - start, latencies


def main(argv: tp.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few batches, a smoke run")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--compute", type=int, default=20, help="matmuls per batch")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here; nothing to measure (skipped)")
        return 0
    n_batches = 5 if args.quick else args.batches
    scratch = Path(tempfile.mkdtemp(prefix="nbstream-gpu-"))
    print(f"device: {torch.cuda.get_device_name()}, {n_batches} batches per loop")
    print(
        f"{'workload':<10} {'collector':<18} {'hook med ms':>11} {'hook p99 ms':>11}"
        f" {'loop/none':>9}"
    )
    try:
        for wname, workload in WORKLOADS.items():
            _gpu_loop(None, workload, 2, scratch / "warm", args.compute)  # warm up kernels
            none_s, _ = _gpu_loop(None, workload, n_batches, scratch / "none", args.compute)
            for cname in COLLECTORS:
                folder = scratch / f"{wname}-{cname}"
                seconds, lat = _gpu_loop(cname, workload, n_batches, folder, args.compute)
                lat.sort()
                p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
                print(
                    f"{wname:<10} {cname:<18} {statistics.median(lat):>11.3f} {p99:>11.3f}"
                    f" {seconds / none_s:>9.3f}"
                )
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
