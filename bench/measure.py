"""Measuring helpers for a noisy VM: reference bandwidths, pre-touching, RSS in a subprocess.

The benchmark VM hands idle memory back to its host after a second or two, and the next
first touch of that memory runs about ten times slower. So buffers are touched right before
a timed region, free memory is warmed before runs that fill the page cache, and numbers
that are compared are measured in the same run, interleaved.
"""

from __future__ import annotations

import json
import mmap
import os
import statistics
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

import numpy as np

__all__ = [
    "PAGE",
    "memcpy_bandwidth",
    "percentile",
    "pretouch",
    "run_fresh_python",
    "summarize",
    "warm_free_memory",
    "write_file",
    "write_memmap",
]

PAGE = mmap.PAGESIZE


def pretouch(*buffers: tp.Any) -> None:
    """Write one byte per page of each buffer (unchanged), so its pages are resident."""
    for buf in buffers:
        arr = buf.numpy() if hasattr(buf, "numpy") else np.asarray(buf)
        if not arr.size:
            continue
        flat = arr.reshape(-1).view(np.uint8)
        flat[::PAGE] = flat[::PAGE]


def warm_free_memory(nbytes: int) -> None:
    """Fault in and release ``nbytes`` of anonymous memory.

    The released pages stay backed by the host for a moment, so page-cache or memmap pages
    allocated right after do not pay the slow first touch. Call it right before a timed run
    that will allocate about ``nbytes``.
    """
    if nbytes <= 0:
        return
    region = mmap.mmap(-1, nbytes)
    try:
        view = np.frombuffer(region, dtype=np.uint8)
        view[::PAGE] = 1
        del view
    finally:
        region.close()


def write_file(path: Path, chunks: tp.Sequence[tp.Any], *, fsync: bool = False) -> float:
    """Seconds to ``write()`` ``chunks`` into a fresh file and close it (the page-cache rate).

    With ``fsync`` the time includes flushing the file to the disk.
    """
    views = [memoryview(c.numpy() if hasattr(c, "numpy") else c).cast("B") for c in chunks]
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for view in views:
            done = 0
            while done < len(view):
                done += os.write(fd, view[done:])
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def write_memmap(path: Path, chunks: tp.Sequence[tp.Any]) -> float:
    """Seconds to copy ``chunks`` into a preallocated, memory-mapped fresh file and unmap it.

    The reference for a memmap writer: same bytes as :func:`write_file`, but each page is
    written through a page fault instead of a ``write()`` call.
    """
    arrays = [(c.numpy() if hasattr(c, "numpy") else np.asarray(c)).reshape(-1) for c in chunks]
    total = sum(a.nbytes for a in arrays)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, total)
        region = mmap.mmap(fd, total)
        try:
            view = np.frombuffer(region, dtype=np.uint8)
            offset = 0
            for arr in arrays:
                np.copyto(view[offset : offset + arr.nbytes], arr.view(np.uint8))
                offset += arr.nbytes
            del view
        finally:
            region.close()
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def memcpy_bandwidth(nbytes: int = 256 << 20, repeats: int = 5) -> float:
    """Median bytes/s of ``np.copyto`` between two resident buffers."""
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.zeros(nbytes, dtype=np.uint8)
    times = []
    for _ in range(repeats):
        pretouch(src, dst)
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return nbytes / statistics.median(times)


def percentile(values: tp.Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear interpolation; NaN when empty."""
    if not len(values):
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarize(values: tp.Sequence[float]) -> dict[str, float]:
    """Median and p99 of a sample."""
    return {"median": percentile(values, 50), "p99": percentile(values, 99)}


_RSS_SCRIPT = """
import json, time
{imports}


def status():
    # VmHWM is the peak RSS; writing 5 to clear_refs resets it to the current RSS.
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {{k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}}


with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status()
t0 = time.perf_counter()
result = {call}
seconds = time.perf_counter() - t0
after = status()
t0 = time.perf_counter()
value = {after_call}
after_seconds = time.perf_counter() - t0
print(json.dumps({{
    "seconds": seconds,
    "peak_growth": after["VmHWM"] - before["VmRSS"],
    "rss_growth": after["VmRSS"] - before["VmRSS"],
    "after": value,
    "after_seconds": after_seconds,
}}))
"""


def run_fresh_python(
    imports: str, call: str, *, cwd: Path, timeout: float = 300, after: str = "None"
) -> dict[str, tp.Any]:
    """Run ``call`` in a fresh interpreter after ``imports``; its time and memory growth.

    ``after`` is an expression evaluated once the memory is measured (it may use
    ``result``, the value of ``call``); its value (JSON) and seconds come back as ``after``
    and ``after_seconds``. ``peak_growth`` is the peak RSS during the call (``VmHWM``, reset
    right before it) less the RSS before it; ``rss_growth`` is the RSS still held after it
    less the RSS before.
    Linux only (``/proc/self/status`` and ``clear_refs``).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), env.get("PYTHONPATH", "")]))
    script = _RSS_SCRIPT.format(imports=imports, call=call, after_call=after)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the measuring subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
