"""Kernel benchmarks: the retrieval set against pandas, concatenation against ``np.copyto``.

Two ways to run them:

- ``pytest bench/bench_kernels.py`` collects the ``test_*`` functions. With the default
  ``--benchmark-disable`` they run once on tiny inputs, so they never rot;
  ``--benchmark-enable`` times them at ``NBSTREAM_BENCH_SCALE`` (default 0.1) of full size.
- ``python bench/bench_kernels.py [first-call] [dedup] [concatenate]`` runs those full-size
  measurements (default: all) in one process and prints a table (``NBSTREAM_BENCH_SCALE``
  scales the sizes, default 1):

  1. de-duplicating 1,000,000 windows x 768 float32 with 10,000 groups (``retrieval_set``,
     ``reduce="mean"`` and ``"first"``; y_true in RAM and as a memmap in the page cache)
     against ``DataFrame(y_true).groupby(groups, sort=False).mean()`` / ``.first()``
     (the DataFrame is built outside the timed region, with ``copy=False``: only the
     group-by is timed, the most favourable reading for pandas);
  2. the first call in a fresh interpreter: cold (empty ``NUMBA_CACHE_DIR``: compiles) and
     warm (the same cache dir: loads machine code);
  3. concatenating 1,000 non-adjacent chunks (every other chunk of one file, as the legacy
     layout interleaves y_pred and y_true chunks), about 2 GB, into a new ``.npy`` memmap,
     as a fraction of ``np.copyto`` doing the same job serially and of ``np.copyto``
     between resident buffers (memory bandwidth); and peak RSS growth of that call in a
     fresh interpreter against ``np.concatenate`` of the loaded chunks.

Compared runs are interleaved and reported as medians of one run, because the VM is noisy
and hands idle memory back to its host (see :mod:`bench.measure`).
"""

from __future__ import annotations

import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

if __package__ in (None, ""):  # run as a script: make `bench` and `nbstream` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure import (
    memcpy_bandwidth,
    pretouch,
    run_fresh_python,
    warm_free_memory,
    write_file,
)
from nbstream.kernels import concatenate
from nbstream.retrieval import retrieval_set

ROOT = Path(__file__).resolve().parents[1]
ROW = 768  # float32 features per window (an embedding)


def _scale(default: float) -> float:
    return float(os.environ.get("NBSTREAM_BENCH_SCALE", default))


# --------------------------------------------------------------------------- workloads


def make_windows(n: int, d: int, k: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """n windows of d float32 features in k groups with string labels, in random order."""
    rng = np.random.default_rng(seed)
    names = np.array([f"item{i:05d}" for i in range(k)], dtype=object)
    codes = np.concatenate([np.arange(min(k, n)), rng.integers(0, k, max(0, n - k))])
    rng.shuffle(codes)
    y = np.empty((n, d), np.float32)
    for lo in range(0, n, 65536):  # in blocks: the generator's float64 temporaries stay small
        y[lo : lo + 65536] = rng.standard_normal((min(65536, n - lo), d), dtype=np.float32)
    return pd.DataFrame({"group": names[codes]}), y


def make_legacy_file(path: Path, n_chunks: int, rows: int, d: int) -> list[np.memmap]:
    """A file of 2 * n_chunks chunks (y_pred, y_true, y_pred, ...); the y_true chunks."""
    mm = np.memmap(path, np.float32, mode="w+", shape=(2 * n_chunks * rows, d))
    for i in range(2 * n_chunks):
        mm[i * rows : (i + 1) * rows] = i
    mm.flush()
    del mm
    mm = np.memmap(path, np.float32, mode="r", shape=(2 * n_chunks * rows, d))
    return [mm[(2 * i + 1) * rows : (2 * i + 2) * rows] for i in range(n_chunks)]


def copyto_job(parts: list[np.ndarray], path: Path) -> np.ndarray:
    """The same job as ``concatenate(parts, out=path)`` done with numpy, serially."""
    shape = (sum(len(p) for p in parts), *parts[0].shape[1:])
    out = np.lib.format.open_memmap(path, mode="w+", dtype=parts[0].dtype, shape=shape)
    row = 0
    for p in parts:
        np.copyto(out[row : row + len(p)], p)
        row += len(p)
    return out


@functools.cache
def _one_pass_kernel() -> Callable[[np.ndarray], np.ndarray]:
    """A parallel column sum of a 2-D float32 array: one read pass, the floor of a reduction.

    Each thread sums a contiguous half of the rows into its own float64 row, as sequential as
    memory allows; nothing a group-by does (finding each group's rows) is in it.
    """
    import numba

    @numba.njit(parallel=True, nogil=True)
    def one_pass(a: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
        n, d = a.shape
        t_max = numba.get_num_threads()
        acc = np.zeros((t_max, d), np.float64)
        for t in numba.prange(t_max):
            for r in range(t * n // t_max, (t + 1) * n // t_max):
                for c in range(d):
                    acc[t, c] += a[r, c]
        return acc.sum(axis=0)

    return one_pass


def _verdict(reached: bool) -> str:
    return "REACHED" if reached else "NOT reached"


def pandas_dedup(frame: pd.DataFrame, groups: np.ndarray, reduce: str) -> pd.DataFrame:
    grouped = frame.groupby(groups, sort=False)
    return grouped.mean() if reduce == "mean" else grouped.first()


# --------------------------------------------------------------------------- pytest


@pytest.fixture(scope="module")
def windows(request: pytest.FixtureRequest) -> tuple[pd.DataFrame, np.ndarray]:
    enabled = not request.config.getoption("benchmark_disable", True)
    s = _scale(0.1) if enabled else 0.002
    return make_windows(
        max(100, int(1_000_000 * s)), ROW if enabled else 16, max(10, int(10_000 * s))
    )


@pytest.mark.parametrize("reduce", ["mean", "first"])
@pytest.mark.parametrize("impl", ["nbstream", "pandas"])
def test_dedup(benchmark: Any, windows: tuple[pd.DataFrame, np.ndarray], impl: str, reduce: str):
    metadata, y = windows
    if impl == "nbstream":
        preds = {"metadata": metadata, "y_true": y}
        retrieval_set(preds, reduce=reduce)  # type: ignore[arg-type]  # warm: compile/load
        result = benchmark(retrieval_set, preds, reduce=reduce)
        assert result.targets.shape[0] == metadata["group"].nunique()
    else:
        frame, groups = pd.DataFrame(y, copy=False), metadata["group"].to_numpy()
        result = benchmark(pandas_dedup, frame, groups, reduce)
        assert len(result) == metadata["group"].nunique()


@pytest.mark.parametrize("impl", ["nbstream", "copyto"])
def test_concatenate(benchmark: Any, tmp_path: Path, impl: str) -> None:
    rows = 683 if not benchmark.disabled else 4
    n_chunks = max(2, int(1000 * _scale(0.1))) if not benchmark.disabled else 10
    parts = make_legacy_file(tmp_path / "legacy.bin", n_chunks, rows, ROW)
    counter = iter(range(1 << 30))

    def run() -> np.ndarray:
        out = tmp_path / f"out{next(counter)}.npy"
        return concatenate(parts, out=out) if impl == "nbstream" else copyto_job(parts, out)

    result = benchmark(run)
    assert result.shape == (n_chunks * rows, ROW)
    np.testing.assert_array_equal(result[::rows, 0], 2 * np.arange(n_chunks) + 1)


# --------------------------------------------------------------------------- full run


def _timed(fn: Callable[[], Any], before: Callable[[], None] = lambda: None) -> float:
    before()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _interleaved(cases: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Run the cases in turn, ``repeats`` rounds; the median seconds of each."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, case in cases.items():
            times[name].append(case())
    return {name: statistics.median(t) for name, t in times.items()}


def bench_dedup(tmp: Path, s: float, repeats: int) -> list[tuple[str, str]]:
    n, k = int(1_000_000 * s), max(10, int(10_000 * s))
    metadata, y = make_windows(n, ROW, k)
    np.save(tmp / "y_true.npy", y)
    mm = np.load(tmp / "y_true.npy", mmap_mode="r")
    frame, groups = pd.DataFrame(y, copy=False), metadata["group"].to_numpy()
    in_ram, mapped = {"metadata": metadata, "y_true": y}, {"metadata": metadata, "y_true": mm}
    for reduce in ("mean", "first"):  # warm: compile or load kernels
        retrieval_set(in_ram, reduce=reduce)  # type: ignore[arg-type]
    touch = lambda: pretouch(y)  # noqa: E731
    cases = {}
    for reduce in ("mean", "first"):
        cases[f"nbstream {reduce}"] = lambda r=reduce: _timed(
            lambda: retrieval_set(in_ram, reduce=r), touch
        )
        cases[f"nbstream {reduce} (memmap)"] = lambda r=reduce: _timed(
            lambda: retrieval_set(mapped, reduce=r)
        )
        cases[f"pandas {reduce}"] = lambda r=reduce: _timed(
            lambda: pandas_dedup(frame, groups, r), touch
        )
    cases["nbstream mean+check"] = lambda: _timed(
        lambda: retrieval_set(in_ram, reduce="mean", check=True), touch
    )
    one_pass = _one_pass_kernel()
    one_pass(y[:8])  # compile outside the timed runs
    cases["floor: one read pass, numba parallel sum"] = lambda: _timed(lambda: one_pass(y), touch)
    cases["floor: one read pass, np.add.reduce"] = lambda: _timed(
        lambda: np.add.reduce(y, axis=0), touch
    )
    t = _interleaved(cases, repeats)
    rows = [(f"de-dup {n:,} x {ROW} float32, {k:,} groups", "median s (speed-up vs pandas)")]
    for name, sec in t.items():
        reduce = "first" if "first" in name else "mean"
        ratio = t[f"pandas {reduce}"] / sec
        note = "" if "pandas" in name or "floor" in name else f" ({ratio:.1f}x)"
        rows.append((f"  {name}", f"{sec:.3f} s{note}"))
    floor = t["floor: one read pass, numba parallel sum"]
    gbs = y.nbytes / floor / 1e9
    rows.append(
        (
            "  one-pass floor bandwidth",
            f"{gbs:.1f} GB/s; 10x pandas mean needs "
            f"{t['pandas mean'] / 10:.3f} s = {floor / (t['pandas mean'] / 10):.2f} of floor",
        )
    )
    for reduce in ("mean", "first"):
        for where in ("", " (memmap)"):
            sec = t[f"nbstream {reduce}{where}"]
            ratio = t[f"pandas {reduce}"] / sec
            frac = f", {floor / sec:.2f} of the one-pass floor" if reduce == "mean" else ""
            rows.append(
                (
                    f"  target >= 10x pandas, {reduce}{where or ' (in RAM)'}",
                    f"{ratio:.1f}x: {_verdict(ratio >= 10)}{frac}",
                )
            )
    return rows


_FIRST_CALL = """
import time
t0 = time.perf_counter()
import numpy as np, pandas as pd
from nbstream import _numba_config as cfg
from nbstream.kernels import concatenate
from nbstream.retrieval import retrieval_set
cfg.SERIAL_MAX_BYTES = 0
t1 = time.perf_counter()
preds = {"metadata": pd.DataFrame({"group": list("abcab")}), "y_true": np.ones((5, 3), "f4")}
retrieval_set(preds, reduce="mean", check=True)
retrieval_set(preds, reduce="first")
a = np.ones((6, 3), "f4")
concatenate([a[:2], a[3:]])
print(time.perf_counter() - t1)
"""


def bench_first_call(tmp: Path) -> list[tuple[str, str]]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp / "numba-cache")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    shutil.rmtree(tmp / "numba-cache", ignore_errors=True)
    out = []
    for label in ("cold: empty NUMBA_CACHE_DIR, compiles", "warm: cached machine code, loads"):
        proc = subprocess.run(
            [sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True
        )
        if proc.returncode:
            raise RuntimeError(proc.stderr[-3000:])
        out.append((f"  {label}", f"{float(proc.stdout.split()[-1]):.2f} s"))
    return [("first call in a fresh process (all 7 kernels)", "seconds"), *out]


def bench_concatenate(tmp: Path, s: float, repeats: int) -> list[tuple[str, str]]:
    n_chunks, rows = max(2, int(1000 * s)), 683
    parts = make_legacy_file(tmp / "legacy.bin", n_chunks, rows, ROW)
    nbytes = sum(p.nbytes for p in parts)
    concatenate(parts[:2], out=tmp / "warm.npy")  # compile or load the kernel

    def job(fn: Callable[[list[np.ndarray], Path], Any]) -> float:
        out = tmp / "out.npy"
        sec = _timed(lambda: fn(parts, out), lambda: warm_free_memory(nbytes))
        out.unlink()
        return sec

    chunk = np.ones(64 << 20, np.uint8)

    def page_cache_write() -> float:  # write() of the same byte count from a resident buffer
        out = tmp / "write.bin"
        warm_free_memory(nbytes)
        pretouch(chunk)
        sec = write_file(out, [chunk] * (nbytes // chunk.nbytes) + [chunk[: nbytes % chunk.nbytes]])
        out.unlink()
        return sec

    t = _interleaved(
        {
            "nbstream": lambda: job(lambda p, o: concatenate(p, out=o)),
            "copyto": lambda: job(copyto_job),
            "write": page_cache_write,
        },
        repeats,
    )
    ram = memcpy_bandwidth(min(nbytes, 1 << 30), repeats=repeats)
    gbs = {name: nbytes / sec / 1e9 for name, sec in t.items()}
    setup = (
        "import numpy as np\nfrom nbstream import kernels\n"
        f"mm = np.memmap({str(tmp / 'legacy.bin')!r}, np.float32, mode='r')"
        f".reshape(-1, {ROW})\n"
        f"parts = [mm[(2 * i + 1) * {rows}:(2 * i + 2) * {rows}] for i in range({n_chunks})]\n"
        f"kernels.concatenate(parts[:2], out={str(tmp / 'warm.npy')!r})"
    )
    ours = run_fresh_python(
        setup, f"kernels.concatenate(parts, out={str(tmp / 'rss.npy')!r})", cwd=ROOT
    )
    (tmp / "rss.npy").unlink()
    theirs = run_fresh_python(setup, "np.concatenate([np.array(p) for p in parts])", cwd=ROOT)
    mib = 1 << 20
    return [
        (f"concatenate {n_chunks:,} non-adjacent chunks, {nbytes / 1e9:.2f} GB -> new .npy", ""),
        ("  nbstream.concatenate(out=path)", f"{t['nbstream']:.3f} s, {gbs['nbstream']:.2f} GB/s"),
        (
            "  np.copyto per chunk into open_memmap",
            f"{t['copyto']:.3f} s, {gbs['copyto']:.2f} GB/s",
        ),
        ("  write() from RAM into a new file (page-cache bw)", f"{gbs['write']:.2f} GB/s"),
        ("  np.copyto resident->resident (memory bw)", f"{ram / 1e9:.2f} GB/s"),
        ("  fraction of memory bandwidth", f"{gbs['nbstream'] * 1e9 / ram:.2f}"),
        ("  fraction of page-cache write bandwidth", f"{gbs['nbstream'] / gbs['write']:.2f}"),
        ("  peak RSS growth, nbstream (subprocess)", f"{ours['peak_growth'] / mib:.0f} MiB"),
        ("  peak RSS growth, np.concatenate(loaded)", f"{theirs['peak_growth'] / mib:.0f} MiB"),
        (
            "  target >= 0.8 of np.copyto, same job",
            f"{gbs['nbstream'] / gbs['copyto']:.2f}: "
            f"{_verdict(gbs['nbstream'] / gbs['copyto'] >= 0.8)}",
        ),
        (
            "  target peak RSS < 256 MiB",
            f"{ours['peak_growth'] / mib:.0f} MiB: {_verdict(ours['peak_growth'] < 256 * mib)}",
        ),
    ]


SECTIONS = ("first-call", "dedup", "concatenate")


def main(argv: list[str] | None = None) -> None:
    """Run the sections named on the command line (default: all of them)."""
    sections = (sys.argv[1:] if argv is None else argv) or list(SECTIONS)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    s, repeats = _scale(1.0), int(os.environ.get("NBSTREAM_BENCH_REPEATS", "3"))
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="nbstream-bench-") as name:
        tmp = Path(name)
        if "first-call" in sections:
            rows += bench_first_call(tmp)
        if "dedup" in sections:
            rows += bench_dedup(tmp, s, repeats)
            (tmp / "y_true.npy").unlink()
        if "concatenate" in sections:
            rows += bench_concatenate(tmp, s, repeats)
    width = max(len(a) for a, _ in rows) + 2
    print(f"nbstream kernel benchmarks (scale {s}, {repeats} interleaved repeats, medians)")
    for a, b in rows:
        print(f"{a:<{width}}{b}")


if __name__ == "__main__":
    main()
