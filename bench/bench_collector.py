"""Core benchmarks: nbstream's collector side by side with the default collector it replaces.

Two ways to run them:

- ``pytest bench/`` collects the ``test_*`` functions below. With benchmarks disabled (the
  default ``--benchmark-disable``) they run once on tiny sizes, in a couple of seconds, so
  they never rot; ``pytest bench/ --benchmark-enable`` times them on full sizes.
- ``python -m bench.bench_collector`` (or ``python bench/bench_collector.py``) runs the full
  side-by-side measurement, prints a table and writes ``bench/results/core.json``:

  1. sustained write throughput, I/O-bound (fMRI batches back to back, prepared in advance),
     next to this machine's page-cache write bandwidth and memcpy bandwidth;
  2. per workload, the main-thread ``on_test_batch_end`` latency (median, p99 over batches)
     and the test-loop wall time with each collector over the loop without one, while a
     model's compute (single-threaded matmuls, standing in for an accelerator the main
     thread waits on) takes twice as long per batch as writing it to the page cache; next
     to them, what a hand-off through a plain queue costs (``queue-put``: one put per
     batch to a sleeping thread, nothing written);
  3. reading ~800 MB back in a fresh subprocess: peak RSS growth and time to open.

Every compared run is interleaved (A, B, C, B, C, A, ...: each repeat starts one later) and
numbers are medians over the repeats of one run, because the VM is noisy (see
:mod:`bench.measure`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import typing as tp
from pathlib import Path

import pytest
import torch

if __package__ in (None, ""):  # run as a script: make `bench` and `nbstream` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure import (
    memcpy_bandwidth,
    pretouch,
    run_fresh_python,
    summarize,
    warm_free_memory,
    write_file,
    write_memmap,
)
from bench.workloads import (
    WORKLOADS,
    Workload,
    make_collector,
    make_step,
    nbstream_available,
    read_folder,
    run_epoch,
)
from nbstream.testing import FakeTrainer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "core.json"
TARGETS = {
    "hook_latency_ratio": 0.05,  # nbstream median / baseline median, at most
    "loop_overhead": 1.05,  # loop with collector / loop without, at most
    "throughput_vs_page_cache": 0.8,  # at least
    "read_peak_rss_mib": 64,  # below
    "read_open_ms": 10,  # below
}
MiB = 1 << 20


# -- pytest-benchmark tests -----------------------------------------------------------------
def _size(workload: Workload, full: bool) -> Workload:
    return workload if full else workload.scaled(n_windows=4, n_batches=3, shrink=500)


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_hook_latency(
    benchmark: tp.Any, collector_name: str, full_size: bool, tmp_path: Path, workload: str
) -> None:
    """Main-thread cost of ``on_test_batch_end``, fresh tensors made outside the timing."""
    w = _size(WORKLOADS[workload], full_size)
    collector = make_collector(collector_name, tmp_path / "out")
    trainer = FakeTrainer(num_test_batches=[w.n_batches])
    trainer_steps = iter(range(w.n_batches))
    calls: list[int] = []

    def setup() -> tuple[tuple[tp.Any, ...], dict[str, tp.Any]]:
        i = next(trainer_steps)
        outputs, batch = make_step(w, i, i * w.n_windows)
        calls.append(i)
        return (trainer, None, outputs, batch, i, 0), {}

    collector.on_test_epoch_start(trainer, None)
    benchmark.pedantic(collector.on_test_batch_end, setup=setup, rounds=w.n_batches)
    collector.on_test_epoch_end(trainer, None)
    out = read_folder(collector_name, tmp_path / "out")
    assert len(out["metadata"]) == len(out["y_pred"]) == len(calls) * w.n_windows


def test_write_throughput(
    benchmark: tp.Any, collector_name: str, full_size: bool, tmp_path: Path
) -> None:
    """A whole I/O-bound epoch of fMRI batches prepared in advance, close included."""
    w = _size(WORKLOADS["fmri"], full_size)
    if full_size:
        w = dataclasses.replace(w, n_batches=80)  # ~1 GB
    steps = [make_step(w, i, i * w.n_windows) for i in range(w.n_batches)]
    runs = iter(range(1000))

    def setup() -> tuple[tuple[tp.Any, ...], dict[str, tp.Any]]:
        folder = tmp_path / f"run{next(runs)}"
        pretouch(*(t for outputs, _ in steps for t in outputs))
        return (make_collector(collector_name, folder), w), {"steps": steps}

    benchmark.extra_info["bytes"] = w.batch_bytes * w.n_batches
    benchmark.pedantic(run_epoch, setup=setup, rounds=3 if full_size else 1)
    out = read_folder(collector_name, tmp_path / "run0")
    assert len(out["y_true"]) == w.n_batches * w.n_windows


def test_read(benchmark: tp.Any, collector_name: str, full_size: bool, tmp_path: Path) -> None:
    """Opening a written folder with the collector's own reader (in this process)."""
    w = _size(WORKLOADS["fmri"], full_size)
    if full_size:
        w = dataclasses.replace(w, n_batches=63)  # ~800 MB
    folder = tmp_path / "out"
    run_epoch(make_collector(collector_name, folder), w)
    out = benchmark(read_folder, collector_name, folder)
    assert out["y_pred"].shape == (w.n_batches * w.n_windows, *w.pred_shape)


# -- the full side-by-side run ---------------------------------------------------------------
class Compute:
    """Matmuls standing in for a model's forward pass, repeated to last about ``seconds``."""

    def __init__(self, seconds: float) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 512, generator=gen)
        self.w = torch.randn(512, 512, generator=gen) / math.sqrt(512)
        self.reps = 1
        for _ in range(3):
            self()
        once = statistics.median(_timed(self) for _ in range(15))
        self.reps = max(1, round(seconds / once))
        self.seconds = statistics.median(_timed(self) for _ in range(5))

    def __call__(self) -> torch.Tensor:
        y = self.x
        for _ in range(self.reps):
            y = torch.tanh(y @ self.w)
        return y


def _timed(fn: tp.Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _median(values: tp.Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def _fmri_epoch(total_bytes: int) -> Workload:
    """The fMRI workload with enough batches for about ``total_bytes``."""
    w = WORKLOADS["fmri"]
    return dataclasses.replace(w, n_batches=max(1, math.ceil(total_bytes / w.batch_bytes)))


def measure_throughput(
    names: list[str], scratch: Path, total_bytes: int, repeats: int
) -> dict[str, tp.Any]:
    """Bytes/s of I/O-bound epochs and of plain ``write()``, interleaved, same buffers."""
    w = _fmri_epoch(total_bytes)
    steps = [make_step(w, i, i * w.n_windows) for i in range(w.n_batches)]
    chunks = [t for outputs, _ in steps for t in outputs]
    nbytes = w.batch_bytes * w.n_batches
    variants = ["page-cache", "page-cache+fsync", "memmap-copy", *names]
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for variant in variants:
            folder = _fresh(scratch / f"throughput-{variant}")
            pretouch(*chunks)
            warm_free_memory(nbytes)
            if variant.startswith("page-cache"):
                folder.mkdir(parents=True)
                fsync = variant.endswith("fsync")
                seconds[variant].append(write_file(folder / "data.bin", chunks, fsync=fsync))
            elif variant == "memmap-copy":
                folder.mkdir(parents=True)
                seconds[variant].append(write_memmap(folder / "data.bin", chunks))
            else:
                times = run_epoch(make_collector(variant, folder), w, steps=steps)
                seconds[variant].append(times.wall)
            shutil.rmtree(folder)
    del steps, chunks
    out: dict[str, tp.Any] = {"bytes": nbytes, "n_batches": w.n_batches}
    for variant, secs in seconds.items():
        rates = [nbytes / s for s in secs]
        out[variant] = {"median_Bps": _median(rates), "runs_Bps": rates}
    return out


LOOP_BATCHES = {"fmri": 100, "ctc": 200, "retrieval": 300, "classif": 500}
# Fresh page-cache pages on this VM have been written as slowly as ~0.5 GB/s; compute sized
# for 0.3 GB/s covers that with margin even when a short calibration pass sees warm pages.
COVER_BPS = 0.3e9


def write_time(workload: Workload, scratch: Path, n_batches: int = 30) -> float:
    """Median main-thread time the baseline takes to write one batch, here and now.

    It sizes the model compute: on this VM fresh page-cache pages cost far more than the
    warm page-cache bandwidth suggests, and "compute covers the write" must hold for them.
    """
    folder = _fresh(scratch / "calibrate")
    w = dataclasses.replace(workload, n_batches=min(n_batches, workload.n_batches))
    times = run_epoch(make_collector("baseline", folder), w)
    shutil.rmtree(folder, ignore_errors=True)
    return _median(times.hook)


def measure_loops(names: list[str], scratch: Path, repeats: int, full: bool) -> dict[str, tp.Any]:
    """Per workload: hook latency and loop wall time, with model compute covering writes."""
    results: dict[str, tp.Any] = {}
    for wname, workload in WORKLOADS.items():
        if full:
            w = dataclasses.replace(workload, n_batches=LOOP_BATCHES[wname])
        else:
            w = workload.scaled(n_windows=8, n_batches=20, shrink=50)
        write_s = write_time(w, scratch)
        compute = Compute(max(2e-3, 2 * write_s, w.batch_bytes / COVER_BPS))
        variants = ["none", *names, "queue-put"]
        per: dict[str, dict[str, list[float]]] = {
            v: {"hook_median": [], "hook_p99": [], "epoch_end": [], "loop": [], "loop_ratio": []}
            for v in variants
        }
        for repeat in range(repeats):
            # Each repeat starts one variant later, so no variant always follows the same one
            # (whose page-cache traffic or freed memory could favour or slow it).
            shift = repeat % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                folder = _fresh(scratch / f"loop-{variant}")
                collector = None if variant == "none" else make_collector(variant, folder)
                times = run_epoch(collector, w, compute=compute)
                stats = summarize(times.hook)
                per[variant]["hook_median"].append(stats["median"])
                per[variant]["hook_p99"].append(stats["p99"])
                per[variant]["epoch_end"].append(times.epoch_end)
                per[variant]["loop"].append(times.loop)
                shutil.rmtree(folder, ignore_errors=True)
            # against the loop without a collector of the same repeat: the VM's speed
            # drifts over minutes, and the runs of one repeat share one stretch of it
            for variant in variants:
                per[variant]["loop_ratio"].append(
                    per[variant]["loop"][-1] / per["none"]["loop"][-1]
                )
        results[wname] = {
            "n_batches": w.n_batches,
            "batch_bytes": w.batch_bytes,
            "calibration_write_s": write_s,
            "compute_per_batch_s": compute.seconds,
            **{v: {k: _median(vals) for k, vals in stat.items()} for v, stat in per.items()},
        }
    return results


def measure_read(
    names: list[str], scratch: Path, total_bytes: int, repeats: int
) -> dict[str, tp.Any]:
    """Open ~``total_bytes`` of predictions in a fresh interpreter: time and RSS growth."""
    w = _fmri_epoch(total_bytes)
    folders = {}
    for name in names:
        folders[name] = _fresh(scratch / f"read-{name}")
        run_epoch(make_collector(name, folders[name]), w)
    common = "import numpy, pandas, pyarrow.parquet\n"
    calls = {
        "baseline": ("from bench.baseline import read_default", "read_default"),
        "nbstream": ("from nbstream import read_predictions", "read_predictions"),
    }
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for _ in range(repeats):
        for name in names:
            imports, fn = calls[name]
            runs[name].append(
                run_fresh_python(common + imports, f"{fn}({str(folders[name])!r})", cwd=ROOT)
            )
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
    out: dict[str, tp.Any] = {"bytes": w.batch_bytes * w.n_batches}
    for name, res in runs.items():
        out[name] = {
            key: _median(r[key] for r in res) for key in ("seconds", "peak_growth", "rss_growth")
        }
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def render(results: dict[str, tp.Any]) -> str:
    """The human-readable table of a results dict."""
    lines: list[str] = []
    add = lines.append
    tp_ = results["throughput"]
    pc = tp_["page-cache"]["median_Bps"]
    add(f"memcpy bandwidth: {results['memcpy_Bps'] / 1e9:.2f} GB/s")
    add(
        f"write throughput, I/O-bound ({tp_['bytes'] / 1e9:.2f} GB of fMRI batches, "
        "median of repeats):"
    )
    add(f"  {'variant':<18} {'GB/s':>7} {'vs page cache':>14}")
    for variant, res in tp_.items():
        if isinstance(res, dict):
            rate = res["median_Bps"]
            add(f"  {variant:<18} {rate / 1e9:>7.2f} {_ratio(rate, pc):>14.2f}")
    add("")
    add("per workload, with model compute covering the write (medians over repeats):")
    header = (
        f"  {'workload':<10} {'collector':<17} {'hook med ms':>11} {'hook p99 ms':>11} "
        f"{'vs base':>8} {'end ms':>8} {'loop s':>7} {'loop/none':>9} {'paired':>7}"
    )
    add(header)
    for wname, res in results["loops"].items():
        base = res.get("baseline", {}).get("hook_median", float("nan"))
        none = res["none"]["loop"]
        add(
            f"  {wname:<10} {'(no collector)':<17} {'':>11} {'':>11} {'':>8} {'':>8} "
            f"{none:>7.2f} {1:>9.3f} {1:>7.3f}   {res['n_batches']} batches of "
            f"{res['batch_bytes'] / MiB:.2f} MiB; compute {res['compute_per_batch_s'] * 1e3:.1f}"
            f" ms/batch vs baseline write {res['calibration_write_s'] * 1e3:.1f} ms"
        )
        for name, stats in res.items():
            if not isinstance(stats, dict) or name == "none":
                continue
            add(
                f"  {wname:<10} {name:<17} {stats['hook_median'] * 1e3:>11.3f} "
                f"{stats['hook_p99'] * 1e3:>11.3f} {_ratio(stats['hook_median'], base):>8.3f} "
                f"{stats['epoch_end'] * 1e3:>8.1f} {stats['loop']:>7.2f} "
                f"{_ratio(stats['loop'], none):>9.3f} {stats['loop_ratio']:>7.3f}"
            )
    add(
        "  (paired: the median over repeats of each loop over the same repeat's loop without"
        " a collector; queue-put: a hook that only puts the batch on a queue a sleeping thread"
        " waits on, nothing written: the cost of waking a writer thread per batch)"
    )
    add("")
    rd = results["read"]
    add(f"read {rd['bytes'] / 1e6:.0f} MB in a fresh process (median of repeats):")
    add(f"  {'collector':<10} {'open ms':>9} {'peak RSS growth MiB':>20} {'RSS held MiB':>13}")
    for name, res in rd.items():
        if isinstance(res, dict):
            add(
                f"  {name:<10} {res['seconds'] * 1e3:>9.2f} {res['peak_growth'] / MiB:>20.1f} "
                f"{res['rss_growth'] / MiB:>13.1f}"
            )
    add("")
    add(f"targets: {json.dumps(TARGETS)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    parser.add_argument("--throughput-gb", type=float, default=2.0)
    parser.add_argument("--read-mb", type=float, default=800.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--scratch", type=Path, default=None, help="where runs write")
    args = parser.parse_args(argv)
    if args.quick:
        args.throughput_gb, args.read_mb = 0.05, 20.0
    # The model's compute stands for an accelerator: the main thread waits on one core while
    # the other stays free, as it would next to a GPU.
    torch.set_num_threads(1)
    names = ["baseline"]
    if nbstream_available():
        names += ["nbstream", "nbstream-nofsync"]
    else:
        print("nbstream's collector does not import yet: measuring the baseline alone")
    t_start = time.perf_counter()
    sections: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="nbstream-bench-", dir=args.scratch) as tmp:
        scratch = Path(tmp)
        results: dict[str, tp.Any] = {
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
            },
            "config": {**vars(args), "out": str(args.out), "scratch": str(scratch)},
            "collectors": names,
            "targets": TARGETS,
        }
        results["memcpy_Bps"] = memcpy_bandwidth()
        results["throughput"] = measure_throughput(
            names, scratch, int(args.throughput_gb * 1e9), args.repeats
        )
        sections["throughput"] = time.perf_counter() - t_start
        results["loops"] = measure_loops(names, scratch, args.repeats, not args.quick)
        sections["loops"] = time.perf_counter() - t_start - sum(sections.values())
        read_names = [n for n in names if n != "nbstream-nofsync"]
        results["read"] = measure_read(read_names, scratch, int(args.read_mb * 1e6), args.repeats)
        sections["read"] = time.perf_counter() - t_start - sum(sections.values())
    results["seconds"] = time.perf_counter() - t_start
    results["section_seconds"] = sections
    print(render(results))
    spent = ", ".join(f"{k} {v:.0f} s" for k, v in sections.items())
    print(f"total {results['seconds']:.0f} s ({spent})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
