"""Numba options and size thresholds for nbstream's kernels, kept in one place.

Why one place: every kernel in :mod:`nbstream.kernels` is compiled with the same options, so
changing a trade-off (e.g. turning ``parallel`` off to debug) is a one-line edit here, not a
hunt through decorators. This module imports nothing heavy: reading it never pulls in numba.

``fastmath`` stays off on purpose: it lets LLVM assume no NaN, and a group mean over a NaN
row must be NaN, and the consistency check must see NaN.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "COPY_CHUNK_BYTES",
    "JIT_OPTIONS",
    "PARALLEL",
    "PREFAULT_WRITES",
    "REDUCE_ACC_FACTOR",
    "REDUCE_BLOCK_BYTES",
    "SERIAL_MAX_BYTES",
    "STREAM_BLOCK_BYTES",
    "jit_options",
]

#: Options shared by every kernel; ``parallel`` is added per kernel by :func:`jit_options`.
JIT_OPTIONS: dict[str, Any] = {"nogil": True, "cache": True, "fastmath": False}

#: Master switch for ``parallel=True`` (kernels with a ``prange`` loop).
PARALLEL: bool = True

#: Inputs smaller than this (bytes the kernel would touch) take a plain numpy path: below it
#: numpy finishes in well under a millisecond, less than loading a cached kernel (~10-100 ms)
#: and far less than a cold compile (~1-3 s per kernel), so tiny calls never import numba.
SERIAL_MAX_BYTES: int = 4 << 20

#: Memory-mapped inputs are streamed in row blocks of about this many bytes; the pages of a
#: finished block are handed back to the OS, so resident memory stays near one block.
STREAM_BLOCK_BYTES: int = 64 << 20

#: Memory-mapped inputs of the per-group reductions (mean, consistency check) are streamed in
#: larger blocks: each block costs, on top of its own bytes, one read and write of the
#: accumulator rows of the groups it touches (up to n_groups x row x 8 bytes, 61 MB for
#: 10,000 groups of 768 floats). A block is therefore ``REDUCE_ACC_FACTOR`` times the
#: accumulator (that overhead is then 1/8 of the input), at least ``STREAM_BLOCK_BYTES`` and
#: at most this cap, which bounds RSS. Measured (1M x 768 float32 memmap, 10k groups): 256 MiB
#: blocks 0.20 s, 1 GiB 0.18 s, one 3 GB block 0.17 s.
REDUCE_BLOCK_BYTES: int = 1 << 30

#: Reduction blocks are this many times the accumulator's bytes (see ``REDUCE_BLOCK_BYTES``).
REDUCE_ACC_FACTOR: int = 16

#: Map each block of a new output file with one MADV_POPULATE_WRITE call before copying
#: into it. Off: measured on the 2-core benchmark VM (2.1 GB into a new .npy, interleaved,
#: 4-5 repeats) letting both copy threads fault pages in parallel was as fast or faster
#: (0.83 vs 0.69 GB/s under load) than populating each block from the calling thread.
PREFAULT_WRITES: bool = False

#: One parallel task of the copy kernel: large enough to amortise scheduling, small enough
#: to spread a few-MiB part over all threads.
COPY_CHUNK_BYTES: int = 256 << 10


def jit_options(parallel: bool) -> dict[str, Any]:
    """The ``numba.njit`` keyword arguments for a kernel (``parallel`` only if it has prange)."""
    return {**JIT_OPTIONS, "parallel": parallel and PARALLEL}
