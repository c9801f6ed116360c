"""The side-by-side scaling benchmark: nbstream and the default collector in real test loops.

For every workload of :data:`bench.workloads.SCALING_WORKLOADS` and every test-set size,
three ``lightning.Trainer.test`` runs are interleaved (no collector, the baseline,
nbstream; the order rotates each repeat) with the same model and batches
(:mod:`bench.loop`), then each folder is read back in a fresh interpreter with its own
reader, which also computes a metric from the arrays (:mod:`bench.metrics`). Per size it
records: loop wall time over the loop without a collector, main-thread hook latency
(median, p99), the collector's epoch end, read-back time and peak RSS growth, the metric
and its time, and bytes on disk.

Separately, an I/O-bound loop (a pass-through model, fMRI batches) measures sustained
write throughput against this machine's sequential write bandwidth (``write()`` of the
same bytes then ``fsync``) and page-cache bandwidth, interleaved in the same run.

The VM is noisy and returns idle memory to its host (see :mod:`bench.measure`): runs are
interleaved, medians are taken, and ratios come from one run.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch

from bench.loop import BenchModel, calibrate, folder_bytes, make_loader, run_test_loop
from bench.measure import (
    memcpy_bandwidth,
    percentile,
    pretouch,
    run_fresh_python,
    warm_free_memory,
    write_file,
)
from bench.workloads import SCALING_WORKLOADS, ScalingWorkload, make_collector

__all__ = ["COLLECTORS", "machine_info", "measure_throughput", "measure_workload"]

ROOT = Path(__file__).resolve().parents[1]
COLLECTORS = ("baseline", "nbstream")
# Model compute per batch is sized to last as long as writing the batch at this rate:
# below this disk's sustained bandwidth (~0.5 GB/s), so the write can hide behind it.
COVER_BPS = 0.3e9
MIN_COMPUTE_S = 2e-3
BIG_BYTES = 2e9  # sizes above: one repeat instead of several
_READERS = {
    "baseline": ("from bench.baseline import read_default", "read_default"),
    "nbstream": ("from nbstream import read_predictions", "read_predictions"),
}


def _median(values: tp.Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def machine_info(scratch: Path) -> dict[str, tp.Any]:
    """Cores, RAM, free disk, load and library versions, for the report."""
    import lightning

    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "ram_bytes": int(meminfo["MemTotal"].split()[0]) * 1024,
        "disk_free_bytes": shutil.disk_usage(scratch).free,
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def mem_available() -> int:
    """Bytes the kernel says can be allocated now without swapping."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


# -- sustained write throughput, I/O-bound ---------------------------------------------------
def measure_throughput(
    names: tp.Sequence[str], scratch: Path, total_bytes: float, repeats: int
) -> dict[str, tp.Any]:
    """Bytes/s of I/O-bound test loops next to ``write()`` (+ ``fsync``) of the same bytes."""
    w = SCALING_WORKLOADS["fmri"]
    n = max(w.batch_size, int(total_bytes // w.window_bytes))
    nbytes = n * w.window_bytes
    model = BenchModel(w, passthrough=True)
    loader = make_loader(w, n)
    chunk = np.ones(64 << 20, dtype=np.uint8)
    chunks = [chunk] * max(1, round(nbytes / chunk.nbytes))
    ref_bytes = chunk.nbytes * len(chunks)
    variants = ["disk (write+fsync)", "page cache (write)", *names]
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(repeats):
        shift = r % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            folder = scratch / "throughput"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            pretouch(chunk)
            warm_free_memory(min(nbytes, 1 << 30))
            if variant in names:
                times = run_test_loop(model, loader, make_collector(variant, folder))
                rates[variant].append(nbytes / times.epoch)
            else:
                fsync = variant.startswith("disk")
                seconds = write_file(folder / "data.bin", chunks, fsync=fsync)
                rates[variant].append(ref_bytes / seconds)
            shutil.rmtree(folder, ignore_errors=True)
    return {
        "bytes": nbytes,
        "windows": n,
        **{v: {"median_Bps": _median(r), "runs_Bps": r} for v, r in rates.items()},
    }


# -- per workload and size -------------------------------------------------------------------
def measure_workload(
    workload: ScalingWorkload,
    sizes: tp.Sequence[int],
    names: tp.Sequence[str],
    scratch: Path,
    *,
    repeats: int,
    baseline_read_limit: float,
    log: tp.Callable[[str], None] = print,
) -> dict[str, tp.Any]:
    """Loops, reads and metrics of ``workload`` at each size in ``sizes`` (windows)."""
    target = max(MIN_COMPUTE_S, workload.batch_size * workload.window_bytes / COVER_BPS)
    depth, compute_s = calibrate(workload, target)
    model = BenchModel(workload, depth)
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        rows.append(
            _measure_size(
                workload, n, model, names, scratch, repeats=repeats, limit=baseline_read_limit
            )
        )
        log(
            f"  {workload.name} n={n}: {n * workload.window_bytes / 1e9:.3f} GB, "
            f"{time.perf_counter() - t0:.0f} s"
        )
    return {
        "batch_size": workload.batch_size,
        "window_bytes": workload.window_bytes,
        "pred": f"{str(workload.pred_dtype).removeprefix('torch.')} (n, {workload.pred_shape})",
        "true": f"{str(workload.true_dtype).removeprefix('torch.')} (n, {workload.true_shape})",
        "metric": workload.metric,
        "model_depth": depth,
        "compute_target_s": target,
        "compute_per_batch_s": compute_s,
        "sizes": rows,
    }


def _measure_size(
    workload: ScalingWorkload,
    n: int,
    model: BenchModel,
    names: tp.Sequence[str],
    scratch: Path,
    *,
    repeats: int,
    limit: float,
) -> dict[str, tp.Any]:
    nbytes = n * workload.window_bytes
    reps = repeats if nbytes < BIG_BYTES else 1
    loader = make_loader(workload, n)
    folders = {name: scratch / f"{workload.name}-{n}-{name}" for name in names}
    variants = ["none", *names]
    loops: dict[str, list[tp.Any]] = {v: [] for v in variants}
    try:
        for r in range(reps):
            shift = r % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                collector = None
                if variant != "none":
                    shutil.rmtree(folders[variant], ignore_errors=True)
                    collector = make_collector(variant, folders[variant])
                warm_free_memory(min(nbytes, 1 << 30))
                loops[variant].append(run_test_loop(model, loader, collector))
        row: dict[str, tp.Any] = {"n": n, "bytes": nbytes, "repeats": reps}
        none_epoch = _median(t.epoch for t in loops["none"])
        for variant, runs in loops.items():
            hooks = [h for t in runs for h in t.hook]
            epoch = _median(t.epoch for t in runs)
            row[variant] = {
                "loop_s": epoch,
                "loop_runs_s": [t.epoch for t in runs],
                "test_call_s": _median(t.test_call for t in runs),
                "overhead": epoch / none_epoch,
                "hook_median_s": percentile(hooks, 50),
                "hook_p99_s": percentile(hooks, 99),
                "epoch_end_s": _median(t.epoch_end for t in runs),
            }
            if variant != "none":
                row[variant]["disk_bytes"] = folder_bytes(folders[variant])
                row[variant]["write_Bps"] = nbytes / epoch
        _measure_reads(row, workload, folders, reps, limit)
        metrics = [row[name].get("metric") for name in names]
        row["metric_equal"] = (
            None
            if any(m is None for m in metrics)
            else bool(np.allclose(metrics, metrics[0], rtol=1e-6, equal_nan=True))
        )
        return row
    finally:
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)


def _measure_reads(
    row: dict[str, tp.Any],
    workload: ScalingWorkload,
    folders: dict[str, Path],
    reps: int,
    limit: float,
) -> None:
    """Read each folder in a fresh interpreter: time, peak RSS growth, then the metric."""
    names = list(folders)
    for name in list(folders):
        # The default reader holds both arrays in RAM (np.concatenate) on top of the chunk
        # memmaps it has touched: skip it where that would crowd this machine.
        need = row["bytes"]
        if name == "baseline" and need > min(limit, 0.6 * mem_available()):
            row[name]["read_skipped"] = (
                f"needs ~{need / 1e9:.1f} GB of RAM for np.concatenate (limit "
                f"{min(limit, 0.6 * mem_available()) / 1e9:.1f} GB)"
            )
            names.remove(name)
    runs: dict[str, list[dict[str, tp.Any]]] = {name: [] for name in names}
    for r in range(reps if names else 0):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            imports, fn = _READERS[name]
            runs[name].append(
                run_fresh_python(
                    "import numpy, pandas, pyarrow.parquet\n"
                    f"from bench.metrics import compute_metric\n{imports}",
                    f"{fn}({str(folders[name])!r})",
                    after=f"compute_metric({workload.metric!r}, result)",
                    cwd=ROOT,
                    timeout=900,
                )
            )
    for name, res in runs.items():
        row[name].update(
            {
                "read_s": _median(r["seconds"] for r in res),
                "read_peak_rss_growth": _median(r["peak_growth"] for r in res),
                "read_rss_held": _median(r["rss_growth"] for r in res),
                "metric": res[0]["after"],
                "metric_s": _median(r["after_seconds"] for r in res),
            }
        )


def reference_bandwidths() -> dict[str, float]:
    """memcpy bandwidth (bytes/s) of this machine, now."""
    return {"memcpy_Bps": memcpy_bandwidth()}
