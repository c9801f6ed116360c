"""Numba kernels: concatenation of row blocks, and per-group reduction (the retrieval set).

Why kernels: predictions are read back as memory-mapped ``(n_windows, ...)`` arrays that can
be larger than RAM. numpy's answers (``np.concatenate``, pandas ``groupby``) load everything
and run on one core; these kernels stream the rows once, on every core, holding about one
block of pages in RAM.

Layout of this module:

* ``_k_*`` functions are the kernels: plain loops over validated, C-contiguous arrays, with
  no validation or branching on user input. They are ordinary Python functions until first
  use, when :func:`_kernel` compiles them with the options of :mod:`nbstream._numba_config`
  (``cache=True``: later processes load the machine code from the cache instead of
  compiling). numba is imported there and nowhere else, so ``import nbstream.kernels`` is
  light.
* Public wrappers (:func:`concatenate`, :func:`group_index`, :func:`group_reduce`,
  :func:`group_disagreement`) validate, convert dtypes and layouts, pick the plain numpy path
  for inputs under ``SERIAL_MAX_BYTES`` (4 MiB), and stream memory-mapped inputs in blocks.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from nbstream import _numba_config as _cfg

__all__ = [
    "GroupIndex",
    "concatenate",
    "group_disagreement",
    "group_index",
    "group_reduce",
]

# Kernels loop with ``prange``: plain ``range`` for pure Python, bound to ``numba.prange`` by
# ``_kernel`` before the first compile (numba reads it from this module's globals).
prange = range


# --------------------------------------------------------------------------- kernels


def _k_copy_spans(
    dst: np.ndarray, src: np.ndarray, dst_at: np.ndarray, src_at: np.ndarray, size: np.ndarray
) -> None:
    """dst[dst_at[t]:][:size[t]] = src[src_at[t]:][:size[t]] for every task t, in parallel.

    Bytes (1-D uint8), so every dtype copies the same way. One call copies many parts (a
    block of them), because each parallel region costs a barrier: per-part calls would make
    a few-MiB part wait on a thread the OS has descheduled.
    """
    for t in prange(size.shape[0]):
        d = dst[dst_at[t] : dst_at[t] + size[t]]
        s = src[src_at[t] : src_at[t] + size[t]]
        for i in range(d.shape[0]):  # from 0: no negative-index checks, so LLVM vectorizes
            d[i] = s[i]


def _k_gather_rows(src: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    """out[g] = src[rows[g]] for 2-D uint8 byte rows: touches only the rows asked for."""
    for g in prange(rows.shape[0]):
        out[g, :] = src[rows[g], :]


def _k_group_index(codes: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes in [0, n_codes) -> (first row, window->group, count), groups by first appearance."""
    n = codes.shape[0]
    rank = np.full(n_codes, -1, np.int64)
    firsts = np.empty(n_codes, np.int64)
    counts = np.zeros(n_codes, np.int64)
    inverse = np.empty(n, np.int64)
    k = 0
    for i in range(n):
        g = rank[codes[i]]
        if g < 0:
            g = k
            rank[codes[i]] = k
            firsts[k] = i
            k += 1
        inverse[i] = g
        counts[g] += 1
    return firsts[:k], inverse, counts[:k]


def _k_group_rows(inverse: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable counting sort: rows of group g are order[offsets[g]:offsets[g+1]], ascending."""
    k = counts.shape[0]
    offsets = np.zeros(k + 1, np.int64)
    for g in range(k):
        offsets[g + 1] = offsets[g] + counts[g]
    fill = offsets[:k].copy()
    order = np.empty(inverse.shape[0], np.int64)
    for i in range(inverse.shape[0]):
        g = inverse[i]
        order[fill[g]] = i
        fill[g] += 1
    return order, offsets


def _k_group_mean(values: np.ndarray, order: np.ndarray, offsets: np.ndarray, out: np.ndarray):
    """out[g] = mean of group g's rows, all rows in RAM, parallel over runs of groups.

    One float64 accumulator row per task stays in L1 while the group's rows stream in, and
    the mean is stored straight into the output dtype: no (k, d) float64 temporary. Rows are
    taken eight at a time: eight independent streams of cache misses overlap (rows of a group
    are scattered over the array, so one row at a time waits on memory latency), while the
    additions still run in row order, acc + r0 + ... + r7, bit-identical to a serial loop.
    Eight streams measured 10-25% faster than four on the 2-core VM (1M x 768, 10k groups).
    """
    k = out.shape[0]
    d = values.shape[1]
    n_tasks = min(k, 256)
    for t in prange(n_tasks):
        acc = np.empty(d, np.float64)
        for g in range(t * k // n_tasks, (t + 1) * k // n_tasks):
            acc[:] = 0.0
            p = offsets[g]
            stop = offsets[g + 1]
            while p + 8 <= stop:
                r0, r1, r2, r3 = order[p], order[p + 1], order[p + 2], order[p + 3]
                r4, r5, r6, r7 = order[p + 4], order[p + 5], order[p + 6], order[p + 7]
                for c in range(d):
                    acc[c] = (
                        acc[c]
                        + values[r0, c]
                        + values[r1, c]
                        + values[r2, c]
                        + values[r3, c]
                        + values[r4, c]
                        + values[r5, c]
                        + values[r6, c]
                        + values[r7, c]
                    )
                p += 8
            while p < stop:
                r = order[p]
                for c in range(d):
                    acc[c] += values[r, c]
                p += 1
            count = offsets[g + 1] - offsets[g]
            for c in range(d):
                out[g, c] = acc[c] / count


def _k_group_sum_block(
    block: np.ndarray,
    row0: int,
    order: np.ndarray,
    offsets: np.ndarray,
    cursor: np.ndarray,
    acc: np.ndarray,
) -> None:
    """acc[g] += rows of group g inside block (global rows row0...), parallel over groups.

    Each thread owns whole groups, so there are no races, one accumulator row stays in cache
    while its rows stream in, and the sum runs in row order (the same as a serial loop).
    cursor[g] remembers where the next block resumes in group g's sorted rows.
    """
    end = row0 + block.shape[0]
    d = acc.shape[1]
    for g in prange(acc.shape[0]):
        p = cursor[g]
        stop = offsets[g + 1]
        while p + 8 <= stop and order[p + 7] < end:  # eight rows at a time, as _k_group_mean
            r0, r1, r2, r3 = (
                order[p] - row0,
                order[p + 1] - row0,
                order[p + 2] - row0,
                order[p + 3] - row0,
            )
            r4, r5, r6, r7 = (
                order[p + 4] - row0,
                order[p + 5] - row0,
                order[p + 6] - row0,
                order[p + 7] - row0,
            )
            for c in range(d):
                acc[g, c] = (
                    acc[g, c]
                    + block[r0, c]
                    + block[r1, c]
                    + block[r2, c]
                    + block[r3, c]
                    + block[r4, c]
                    + block[r5, c]
                    + block[r6, c]
                    + block[r7, c]
                )
            p += 8
        while p < stop and order[p] < end:
            r = order[p] - row0
            for c in range(d):
                acc[g, c] += block[r, c]
            p += 1
        cursor[g] = p


def _k_group_diff_block(
    block: np.ndarray,
    row0: int,
    order: np.ndarray,
    offsets: np.ndarray,
    cursor: np.ndarray,
    ref: np.ndarray,
    n_diff: np.ndarray,
    max_diff: np.ndarray,
) -> None:
    """Count rows of each group that differ from ref[g], and the largest |difference|.

    NaN equals NaN; NaN against a number counts as an infinite difference.
    """
    end = row0 + block.shape[0]
    d = block.shape[1]
    for g in prange(ref.shape[0]):
        p = cursor[g]
        stop = offsets[g + 1]
        worst = max_diff[g]
        bad = n_diff[g]
        while p < stop and order[p] < end:
            r = order[p] - row0
            same = True
            for c in range(d):  # vectorized fast path: most rows equal their group's first
                same &= block[r, c] == ref[g, c]
            p += 1
            if same:
                continue
            row_differs = False
            for c in range(d):
                a = block[r, c]
                b = ref[g, c]
                if a != b and not (a != a and b != b):
                    row_differs = True
                    diff = abs(np.float64(a) - np.float64(b))
                    if diff != diff:
                        diff = np.float64(np.inf)
                    worst = max(worst, diff)
            bad += row_differs
        cursor[g] = p
        max_diff[g] = worst
        n_diff[g] = bad


_PARALLEL_KERNELS = {
    "_k_copy_spans",
    "_k_gather_rows",
    "_k_group_mean",
    "_k_group_sum_block",
    "_k_group_diff_block",
}
_compile_lock = threading.Lock()


@functools.cache
def _kernel(name: str) -> Callable[..., Any]:
    """The compiled kernel ``name``; the first call imports numba and compiles (or loads)."""
    with _compile_lock:
        import numba

        globals()["prange"] = numba.prange
        return numba.njit(**_cfg.jit_options(name in _PARALLEL_KERNELS))(globals()[name])


# --------------------------------------------------------------------------- memory pages

_MADV_DONTNEED = 4
_MADV_POPULATE_WRITE = 23
_libc_madvise: Callable[..., int] | None = None


def _shared_file_mapping(arr: np.ndarray) -> bool:
    """Whether arr's memory is a shared file mapping (np.memmap not opened copy-on-write)."""
    a: Any = arr
    while isinstance(a, np.ndarray):
        if isinstance(a, np.memmap):
            return a.mode != "c"
        a = a.base
    return False


def _madvise(arr: np.ndarray, advice: int) -> None:
    """madvise(2) over arr's pages; best effort (an old kernel may not know the advice)."""
    global _libc_madvise
    if _libc_madvise is None:
        fn = ctypes.CDLL(None, use_errno=True).madvise
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        fn.restype = ctypes.c_int
        _libc_madvise = fn
    page = os.sysconf("SC_PAGE_SIZE")
    lo = _address(arr)
    start = lo - lo % page
    _libc_madvise(start, lo + arr.nbytes - start, advice)


def _prefault(arr: np.ndarray) -> None:
    """Map a writable memmap block's pages in one call (MADV_POPULATE_WRITE, Linux 5.14+).

    Why: filling a new file through a mapping otherwise takes one page fault per 4 KiB page,
    several times the cost of copying the page. Off by default (``PREFAULT_WRITES``).
    """
    if (
        _cfg.PREFAULT_WRITES
        and arr.nbytes
        and sys.platform.startswith("linux")
        and _shared_file_mapping(arr)
    ):
        _madvise(arr, _MADV_POPULATE_WRITE)


def _release(arr: np.ndarray) -> None:
    """Drop arr's pages from this process's resident set (Linux; shared file mappings only).

    Why: reading a memmap keeps every touched page resident, so a full pass over a file
    would grow RSS by the file size. For a shared file mapping MADV_DONTNEED loses nothing:
    the data stays in the page cache (dirty pages are still written back), and a later access
    maps it again. Never applied to anonymous or copy-on-write memory, where it would zero it.
    """
    if arr.nbytes and sys.platform.startswith("linux") and _shared_file_mapping(arr):
        _madvise(arr, _MADV_DONTNEED)


# --------------------------------------------------------------------------- concatenation


def _root(arr: np.ndarray) -> np.ndarray:
    """The outermost ndarray in arr's ``.base`` chain (the memmap or the owner)."""
    while isinstance(arr.base, np.ndarray):
        arr = arr.base
    return arr


def _address(arr: np.ndarray) -> int:
    return int(arr.__array_interface__["data"][0])


def _adjacent_view(parts: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray | None:
    """A view of the shared buffer when parts are consecutive C-contiguous regions of it."""
    full = [p for p in parts if p.nbytes]
    if not full:
        return None
    root = _root(full[0])
    if not root.flags.c_contiguous or any(not p.flags.c_contiguous for p in full):
        return None
    start = expected = _address(full[0])
    for p in full:
        if _root(p) is not root or _address(p) != expected:
            return None
        expected += p.nbytes
    offset = start - _address(root)
    if offset < 0 or expected - _address(root) > root.nbytes:
        return None
    flat = root.reshape(-1).view(np.uint8)
    return flat[offset : offset + (expected - start)].view(full[0].dtype).reshape(shape)


def _validate_parts(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(parts, np.ndarray):
        raise TypeError(
            f"concatenate got one array of shape {parts.shape}; expected a sequence of row "
            "blocks: pass [array] for a single part"
        )
    arrays = [p if isinstance(p, np.ndarray) else np.asarray(p) for p in parts]
    if not arrays:
        raise ValueError(
            "concatenate got 0 parts; expected at least one (n_i, ...) row block, which sets "
            "the dtype and trailing shape"
        )
    dtype, trailing = arrays[0].dtype, arrays[0].shape[1:]
    for i, p in enumerate(arrays):
        if p.ndim == 0:
            raise ValueError(
                f"part {i} is a 0-d array; expected row blocks of shape (n_i, ...): "
                "wrap a scalar row as np.atleast_1d(x)[None]"
            )
        if p.dtype != dtype:
            raise ValueError(
                f"part {i} has dtype {p.dtype}, expected {dtype} (the dtype of part 0); "
                f"cast it first, e.g. part.astype({str(dtype)!r})"
            )
        if p.shape[1:] != trailing:
            raise ValueError(
                f"part {i} has shape {p.shape}, expected (n_{i}, {', '.join(map(str, trailing))}"
                f"{',' if len(trailing) == 1 else ''}) (the trailing shape {trailing} of part 0); "
                "every part must have the same shape after its first dimension"
            )
    return arrays


def _open_out(out: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(
            f"out is a {type(out).__name__}; expected None, a numpy array or a path (str or "
            "Path) where a new .npy file is created"
        )
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(
            f"out has shape {out.shape} and dtype {out.dtype}, expected {shape} and {dtype} "
            "(the parts' rows stacked); allocate it as np.empty(shape, dtype)"
        )
    if not out.flags.writeable:
        raise ValueError("out is read-only; pass a writeable array (or a memmap opened 'r+')")
    return out


class _SpanBatch:
    """Parts (byte spans of one source buffer) waiting to be copied by one kernel call."""

    def __init__(self, out: np.ndarray) -> None:
        self.out = out
        self.dst = np.asarray(out).reshape(-1).view(np.uint8)
        self.root: np.ndarray | None = None
        self.spans: list[tuple[np.ndarray, int, int]] = []  # (source bytes, src_at, dst_at)
        self.nbytes = 0

    def add(self, src: np.ndarray, root: np.ndarray, dst_at: int) -> None:
        if self.spans and (root is not self.root or self.nbytes + src.nbytes > _block_bytes()):
            self.flush()
        self.root = root
        self.spans.append((src, _address(src) - _address(root), dst_at))
        self.nbytes += src.nbytes

    def flush(self) -> None:
        """Copy the pending spans in one parallel call, then release their pages."""
        if not self.spans or self.root is None:
            return
        chunk = _cfg.COPY_CHUNK_BYTES
        tasks = [
            (dst_at + lo, src_at + lo, min(chunk, src.nbytes - lo))
            for src, src_at, dst_at in self.spans
            for lo in range(0, src.nbytes, chunk)
        ]
        dst_at, src_at, size = np.array(tasks, np.int64).T.copy()
        root_bytes = np.asarray(self.root).reshape(-1).view(np.uint8)
        first = self.spans[0][2]
        _prefault(self.out.reshape(-1).view(np.uint8)[first : first + self.nbytes])
        _kernel("_k_copy_spans")(self.dst, root_bytes, dst_at, src_at, size)
        for src, _, _ in self.spans:
            _release(src)
        _release(self.out.reshape(-1).view(np.uint8)[first : first + self.nbytes])
        self.spans, self.nbytes = [], 0


def _block_bytes() -> int:
    return max(1, _cfg.STREAM_BLOCK_BYTES)


def _copy_parts(parts: list[np.ndarray], out: np.ndarray) -> None:
    """Copy parts into consecutive rows of out, a block of parts per kernel call.

    Memmap pages are handed back after each block, so RSS stays about one block.
    """
    if out.nbytes < _cfg.SERIAL_MAX_BYTES or not out.flags.c_contiguous:
        row = 0
        for p in parts:
            out[row : row + p.shape[0]] = p
            row += p.shape[0]
        return
    batch, pos, row = _SpanBatch(out), 0, 0
    for p in parts:
        root = _root(p)
        if p.nbytes and p.flags.c_contiguous and root.flags.c_contiguous:
            flat = p.reshape(-1).view(np.uint8)
            for lo in range(0, p.nbytes, _block_bytes()):  # a huge part: several blocks
                batch.add(flat[lo : lo + _block_bytes()], root, pos + lo)
        elif p.nbytes:  # strided: numpy copies it
            batch.flush()
            out[row : row + p.shape[0]] = p
        pos += p.nbytes
        row += p.shape[0]
    batch.flush()


def concatenate(
    parts: Sequence[np.ndarray], out: np.ndarray | str | os.PathLike[str] | None = None
) -> np.ndarray:
    """Stack row blocks ``(n_i, ...)`` into one ``(sum n_i, ...)`` array, copying only if needed.

    Why not ``np.concatenate``: when the parts are consecutive rows of one buffer (chunks
    written back to back in one memmap) the answer is already on disk, so a view of that
    buffer is returned at no cost; otherwise a parallel byte-copy kernel fills ``out`` at
    memory bandwidth and, for memmap parts, hands each block's pages back to the OS, so RSS
    stays about one block (64 MiB) even for files larger than RAM.

    Args:
        parts: arrays or memmaps, all of the same dtype (any, bfloat16 included: rows are
            copied as bytes) and the same shape after the first dimension.
        out: ``None`` (a view if possible, else a new in-RAM array), a preallocated array of
            the stacked shape and dtype (always filled), or a path where a new standard
            ``.npy`` file is created (``np.lib.format.open_memmap``) and returned as a memmap;
            call ``.flush()`` on it when it must survive a crash.

    Raises:
        ValueError: no parts, a 0-d part, or a part whose dtype or trailing shape differs
            from part 0's (the message names the part); ``out`` of the wrong shape/dtype.
    """
    arrays = _validate_parts(parts)
    shape = (sum(p.shape[0] for p in arrays), *arrays[0].shape[1:])
    dtype = arrays[0].dtype
    if out is None:
        view = _adjacent_view(arrays, shape)
        if view is not None:
            return view
    if not isinstance(out, str | os.PathLike):
        result = _open_out(out, shape, dtype)
        _copy_parts(arrays, result)
        return result
    # A new file is written under a temporary name and renamed when complete, so no reader
    # ever sees a half-filled .npy; the returned memmap stays valid across the rename.
    path = Path(out)
    partial = path.with_name(path.name + ".partial")
    try:
        result = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=shape)
        _copy_parts(arrays, result)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    result.filename = str(path.resolve())
    return result


# --------------------------------------------------------------------------- groups


class GroupIndex(NamedTuple):
    """Groups of windows, numbered by first appearance.

    firsts: first row of each group ``(k,)``; inverse: group of each row ``(n,)``;
    counts: rows per group ``(k,)``; order/offsets: rows of group g are
    ``order[offsets[g]:offsets[g + 1]]``, ascending. All int64.
    """

    firsts: np.ndarray
    inverse: np.ndarray
    counts: np.ndarray
    order: np.ndarray
    offsets: np.ndarray


def group_index(codes: np.ndarray, n_codes: int | None = None) -> GroupIndex:
    """Index groups given integer codes in ``[0, n_codes)`` (e.g. from ``pd.factorize``).

    Groups are renumbered by first appearance, so the result is the same whether the codes
    came from a sorted or an unsorted factorization.
    """
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    if codes.ndim != 1:
        raise ValueError(f"codes has shape {codes.shape}; expected one code per row, (n,)")
    if n_codes is None:
        n_codes = int(codes.max()) + 1 if codes.size else 0
    if codes.size and (codes.min() < 0 or codes.max() >= n_codes):
        raise ValueError(
            f"codes span [{codes.min()}, {codes.max()}], expected [0, {n_codes}); "
            "factorize with use_na_sentinel=False so missing labels get a code too"
        )
    if codes.nbytes < _cfg.SERIAL_MAX_BYTES:
        return _np_group_index(codes)
    firsts, inverse, counts = _kernel("_k_group_index")(codes, n_codes)
    order, offsets = _kernel("_k_group_rows")(inverse, counts)
    return GroupIndex(firsts, inverse, counts, order, offsets)


def _np_group_index(codes: np.ndarray) -> GroupIndex:
    """numpy twin of the group-index kernels, for small inputs."""
    uniq, first = np.unique(codes, return_index=True)
    by_appearance = np.argsort(first, kind="stable")
    rank = np.zeros(int(uniq.max()) + 1 if uniq.size else 0, np.int64)
    rank[uniq[by_appearance]] = np.arange(uniq.size)
    inverse = rank[codes]
    counts = np.bincount(inverse, minlength=uniq.size).astype(np.int64)
    order = np.argsort(inverse, kind="stable").astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return GroupIndex(first[by_appearance].astype(np.int64), inverse, counts, order, offsets)


def _kernel_dtype(dtype: np.dtype, exact: bool) -> np.dtype:
    """The dtype a kernel reads: float32/float64 as they are, others widened.

    ``exact`` (the consistency check) keeps integers exact in int64/uint64.
    """
    if dtype in (np.float32, np.float64) or (exact and dtype == np.uint64):
        return dtype
    if exact and (dtype.kind in "biu" and dtype != np.uint64):
        return np.dtype(np.int64)
    if exact and dtype.itemsize <= 2 and dtype.kind in "fV":  # float16, bfloat16: exact
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _real_view(block: np.ndarray) -> np.ndarray:
    """A complex block as real numbers (re, im pairs along the last axis); others unchanged."""
    if block.dtype.kind != "c":
        return block
    return np.ascontiguousarray(block).view(block.real.dtype)


def _reduce_block_bytes(acc_bytes: int) -> int:
    """Bytes per block of a reduction whose accumulator (or reference rows) is acc_bytes.

    See ``REDUCE_BLOCK_BYTES``: every block re-reads the accumulator, so blocks grow with it.
    """
    want = _cfg.REDUCE_ACC_FACTOR * acc_bytes
    return max(1, min(max(want, _cfg.STREAM_BLOCK_BYTES), _cfg.REDUCE_BLOCK_BYTES))


def _blocks(values: np.ndarray, kdtype: np.dtype, d: int, block_bytes: int):
    """Yield (row0, (m, d) C-contiguous block in kdtype), releasing memmap pages after each.

    Blocks are about ``block_bytes`` of the input (see :func:`_reduce_block_bytes`).
    """
    n = values.shape[0]
    whole = not _shared_file_mapping(values) and values.flags.c_contiguous
    if whole and _real_view(values[:0]).dtype == kdtype:
        rows = max(n, 1)
    else:
        row_bytes = max(1, d * max(kdtype.itemsize, values.dtype.itemsize))
        rows = max(1, block_bytes // row_bytes)
    for r0 in range(0, n, rows):
        raw = values[r0 : r0 + rows]
        block = np.ascontiguousarray(_real_view(raw), dtype=kdtype).reshape(raw.shape[0], d)
        yield r0, np.asarray(block)
        _release(raw)


def _row_width(values: np.ndarray) -> int:
    """Elements per row as the kernels see them (complex counts twice)."""
    d = int(np.prod(values.shape[1:], dtype=np.int64))
    return 2 * d if values.dtype.kind == "c" else d


def _restore(flat: np.ndarray, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """(k, d) kernel output back to (k, ...) in ``dtype`` (complex from re, im pairs)."""
    k = flat.shape[0]
    if dtype.kind == "c":
        real = flat.astype(np.empty(0, dtype).real.dtype, copy=False)
        return real.view(dtype).reshape(k, *values.shape[1:])
    return flat.astype(dtype, copy=False).reshape(k, *values.shape[1:])


def group_reduce(
    values: np.ndarray, index: GroupIndex, how: Literal["first", "mean"] = "mean"
) -> np.ndarray:
    """One row per group: its first row (any dtype, bit-exact) or its mean.

    ``"first"`` reads only the first rows (from a memmap, only their pages). ``"mean"``
    accumulates in float64 (complex128 for complex input); the result keeps a float or complex
    input dtype (as ``np.mean`` does) and is float64 otherwise. NaN propagates: a group with a
    NaN row has a NaN mean. Memmaps are streamed in blocks (:func:`_reduce_block_bytes`).
    """
    if how == "first":
        return _gather_rows(values, index.firsts)
    if how != "mean":
        raise ValueError(f"how={how!r}; expected 'first' or 'mean'")
    k, d = index.counts.shape[0], _row_width(values)
    out_dtype = values.dtype if values.dtype.kind in "fc" else np.dtype(np.float64)
    kdtype = _kernel_dtype(_real_view(values[:0]).dtype, exact=False)
    if (
        values.nbytes >= _cfg.SERIAL_MAX_BYTES
        and values.flags.c_contiguous
        and not _shared_file_mapping(values)
        and _real_view(values[:0]).dtype == kdtype
    ):  # in RAM, as the kernel reads it: one pass, written straight into the result
        rows = np.asarray(_real_view(values)).reshape(values.shape[0], d)
        out = np.empty((k, d), kdtype)
        _kernel("_k_group_mean")(rows, index.order, index.offsets, out)
        return _restore(out, values, out_dtype)
    acc = np.zeros((k, d), np.float64)
    if values.nbytes < _cfg.SERIAL_MAX_BYTES:
        if k:
            rows = np.ascontiguousarray(_real_view(values)).reshape(values.shape[0], d)
            acc = np.add.reduceat(rows[index.order].astype(np.float64), index.offsets[:-1])
    else:
        kernel = _kernel("_k_group_sum_block")
        cursor = index.offsets[:-1].copy()
        for r0, block in _blocks(values, kdtype, d, _reduce_block_bytes(acc.nbytes)):
            kernel(block, r0, index.order, index.offsets, cursor, acc)
    acc /= np.maximum(index.counts, 1)[:, None]  # in place: a (k, d) float64 temporary less
    return _restore(acc, values, out_dtype)


def _gather_rows(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    k = rows.shape[0]
    row_bytes = values.dtype.itemsize * int(np.prod(values.shape[1:], dtype=np.int64))
    if k * row_bytes < _cfg.SERIAL_MAX_BYTES or not values.flags.c_contiguous:
        return np.asarray(np.take(values, rows, axis=0))
    out = np.empty((k, *values.shape[1:]), values.dtype)
    src = np.asarray(values).reshape(-1).view(np.uint8).reshape(values.shape[0], row_bytes)
    _kernel("_k_gather_rows")(src, rows, out.reshape(-1).view(np.uint8).reshape(k, row_bytes))
    _release(values)
    return out


def group_disagreement(values: np.ndarray, index: GroupIndex) -> tuple[np.ndarray, np.ndarray]:
    """Per group: how many rows differ from its first row, and the largest |difference|.

    Why: a retrieval set keeps one target per group, which is only right if every window of
    the group has the same target. NaN equals NaN; NaN against a number is an infinite
    difference. Complex values are compared by real and imaginary part.
    """
    k, d = index.counts.shape[0], _row_width(values)
    kdtype = _kernel_dtype(_real_view(values[:0]).dtype, exact=True)
    ref = np.ascontiguousarray(
        _real_view(_gather_rows(values, index.firsts)), dtype=kdtype
    ).reshape(k, d)
    n_diff = np.zeros(k, np.int64)
    max_diff = np.zeros(k, np.float64)
    if values.nbytes < _cfg.SERIAL_MAX_BYTES:
        if k:
            _np_diff(values, kdtype, d, index, ref, n_diff, max_diff)
        return n_diff, max_diff
    kernel = _kernel("_k_group_diff_block")
    cursor = index.offsets[:-1].copy()
    for r0, block in _blocks(values, kdtype, d, _reduce_block_bytes(ref.nbytes)):
        kernel(block, r0, index.order, index.offsets, cursor, ref, n_diff, max_diff)
    return n_diff, max_diff


def _np_diff(
    values: np.ndarray,
    kdtype: np.dtype,
    d: int,
    index: GroupIndex,
    ref: np.ndarray,
    n_diff: np.ndarray,
    max_diff: np.ndarray,
) -> None:
    """numpy twin of the consistency kernel, for small inputs (fills n_diff, max_diff)."""
    rows = np.ascontiguousarray(_real_view(values), dtype=kdtype).reshape(values.shape[0], d)
    first = ref[index.inverse]
    same = (rows == first) | (np.isnan(rows) & np.isnan(first) if kdtype.kind == "f" else False)
    with np.errstate(invalid="ignore"):
        diff = np.abs(rows.astype(np.float64) - first.astype(np.float64))
    diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
    np.add.at(n_diff, index.inverse, (~same).any(axis=1))
    np.maximum.at(max_diff, index.inverse, diff.max(axis=1, initial=0.0))
