"""Plain numpy/pandas twins of nbstream's kernels: slow, obvious, and the reference in tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def concatenate(parts: list[np.ndarray]) -> np.ndarray:
    """Stack row blocks."""
    return np.concatenate([np.asarray(p) for p in parts])


def group_index(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first row, window -> group, count), groups numbered by first appearance (pandas)."""
    codes = np.asarray(codes, dtype=np.int64)
    firsts = pd.Series(codes).drop_duplicates().index.to_numpy(dtype=np.int64)
    inverse = pd.Index(codes[firsts]).get_indexer(codes).astype(np.int64)
    counts = np.bincount(inverse, minlength=firsts.size).astype(np.int64)
    return firsts, inverse, counts


def group_first(values: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """The first row of each group (a Python loop over rows)."""
    seen: dict[int, int] = {}
    for i, g in enumerate(inverse.tolist()):
        seen.setdefault(g, i)
    rows = [seen[g] for g in range(len(seen))]
    return np.asarray(values)[rows] if rows else np.asarray(values)[:0]


def group_mean(values: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Mean per group, summed in float64 (complex128) row by row; NaN propagates."""
    values = np.asarray(values)
    k = int(inverse.max()) + 1 if inverse.size else 0
    acc_dtype = np.complex128 if values.dtype.kind == "c" else np.float64
    acc = np.zeros((k, *values.shape[1:]), acc_dtype)
    counts = np.zeros(k, np.int64)
    for i, g in enumerate(inverse.tolist()):
        acc[g] += values[i].astype(acc_dtype)
        counts[g] += 1
    mean = acc / counts.reshape(-1, *([1] * (values.ndim - 1)))
    return mean.astype(values.dtype if values.dtype.kind in "fc" else np.float64)


def _real(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "c":
        return np.stack([values.real, values.imag], axis=-1)
    if values.dtype.kind in "biu":
        return values.astype(object)  # exact integer differences
    return values.astype(np.float64)


def group_disagreement(values: np.ndarray, inverse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group: rows differing from the first row (NaN == NaN) and the max |difference|."""
    real = _real(values)
    k = int(inverse.max()) + 1 if inverse.size else 0
    first: dict[int, np.ndarray] = {}
    n_diff = np.zeros(k, np.int64)
    max_diff = np.zeros(k, np.float64)
    for i, g in enumerate(inverse.tolist()):
        row = np.ravel(real[i])
        if g not in first:
            first[g] = row
            continue
        worst, differs = 0.0, False
        for a, b in zip(row.tolist(), first[g].tolist(), strict=True):
            if a == b or (a != a and b != b):
                continue
            differs = True
            diff = float(abs(a - b))
            worst = max(worst, np.inf if diff != diff else diff)
        n_diff[g] += differs
        max_diff[g] = max(max_diff[g], worst)
    return n_diff, max_diff


def retrieval_set(
    metadata: pd.DataFrame, y_true: np.ndarray, group: str, reduce: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(labels, targets, counts, inverse) the idiomatic pandas way (NaN-free y_true only:
    pandas' mean skips NaN where nbstream's propagates it)."""
    labels = metadata[group]
    frame = pd.DataFrame(np.asarray(y_true).reshape(len(labels), -1).astype(np.float64))
    grouped = frame.groupby(labels.to_numpy(), sort=False, dropna=False)
    firsts = grouped.head(1).index.to_numpy()
    if reduce == "first":
        targets = np.asarray(y_true)[firsts]
    else:
        targets = grouped.mean().to_numpy().reshape(-1, *np.shape(y_true)[1:])
    codes = grouped.ngroup().to_numpy()
    counts = grouped.size().to_numpy()
    return labels.to_numpy()[firsts], targets, counts, codes
