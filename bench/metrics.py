"""A metric per workload, computed from read-back arrays in row chunks (memmaps stream).

It proves the arrays are usable and lets the benchmark check that both collectors saved the
same numbers: the metric of nbstream's folder must equal the baseline's.
"""

from __future__ import annotations

import typing as tp

import numpy as np

__all__ = ["compute_metric"]

CHUNK_BYTES = 64 << 20


def _chunks(n: int, row_bytes: int) -> tp.Iterator[slice]:
    step = max(1, CHUNK_BYTES // max(1, row_bytes))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def compute_metric(kind: str, preds: dict[str, tp.Any]) -> float:
    """``mse``, ``ctc_loss`` (mean), ``top1`` retrieval accuracy or ``accuracy``."""
    y_pred, y_true = preds["y_pred"], preds["y_true"]
    n = len(y_pred)
    if n == 0:
        return float("nan")
    row_bytes = y_pred[:1].nbytes + y_true[:1].nbytes
    if kind == "mse":
        total = 0.0
        for sl in _chunks(n, row_bytes):
            diff = np.asarray(y_pred[sl], dtype=np.float64) - y_true[sl]
            total += float(np.einsum("ij,ij->", diff, diff))
        return total / y_pred.size
    if kind == "accuracy":
        hits = sum(int((y_pred[sl].argmax(1) == y_true[sl]).sum()) for sl in _chunks(n, row_bytes))
        return hits / n
    if kind == "top1":
        # The retrieval set: one target per stimulus group (its first window's).
        _, codes = np.unique(preds["metadata"]["group"].to_numpy(), return_inverse=True)
        codes = codes.reshape(-1)
        first = np.full(codes.max() + 1, n, dtype=np.int64)
        np.minimum.at(first, codes, np.arange(n))
        targets = np.asarray(y_true[first], dtype=np.float32)  # row k: group k
        targets /= np.linalg.norm(targets, axis=1, keepdims=True)
        hits = 0
        for sl in _chunks(n, row_bytes):
            best = (np.asarray(y_pred[sl], dtype=np.float32) @ targets.T).argmax(1)
            hits += int((best == codes[sl]).sum())
        return hits / n
    if kind == "ctc_loss":
        import torch

        total = 0.0
        for sl in _chunks(n, row_bytes):
            log_probs = torch.from_numpy(np.array(y_pred[sl])).transpose(0, 1)  # (T, N, C)
            labels = torch.from_numpy(np.array(y_true[sl]))
            t, rows = log_probs.shape[0], log_probs.shape[1]
            loss = torch.nn.functional.ctc_loss(
                log_probs,
                labels,
                torch.full((rows,), t, dtype=torch.long),
                torch.full((rows,), labels.shape[1], dtype=torch.long),
                reduction="sum",
                zero_infinity=True,
            )
            total += float(loss)
        return total / n
    raise ValueError(f"unknown metric {kind!r}; expected mse, accuracy, top1 or ctc_loss")
