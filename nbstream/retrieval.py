"""The retrieval set: one target per group of windows, for retrieval metrics.

Why: in retrieval evaluation each window's prediction is ranked against the targets of all
*distinct* items (words, sentences, images), not against every window. Windows of the same
item share a group label in the metadata (e.g. ``"text"``), so the candidate set is the
windows' targets de-duplicated per group. With a million windows of 768-d embeddings, the
pandas way (``DataFrame(y_true).groupby(...).mean()``) loads everything and takes seconds;
this module builds the same set with the streaming kernels of :mod:`nbstream.kernels`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from nbstream import kernels

__all__ = ["RetrievalSet", "retrieval_set"]


@dataclass(frozen=True, eq=False)
class RetrievalSet:
    """Targets de-duplicated per group.

    Attributes:
        labels: ``(n_groups,)`` the group labels, in order of first appearance.
        targets: ``(n_groups, ...)`` one target per group: the first window's (original
            dtype) or the mean over the group's windows (float).
        counts: ``(n_groups,)`` int64, windows per group.
        inverse: ``(n_windows,)`` int64, the group index of each window: window ``i``'s
            correct candidate is ``targets[inverse[i]]``.
        inconsistent: only with ``check=True``, else ``None``: one row per group whose
            windows' targets disagree with its first window's, with columns ``group``,
            ``n_windows``, ``n_differing`` (windows that differ) and ``max_abs_diff``
            (``inf`` where NaN meets a number); empty when every group is consistent.
    """

    labels: np.ndarray
    targets: np.ndarray
    counts: np.ndarray
    inverse: np.ndarray
    inconsistent: pd.DataFrame | None = None

    def __len__(self) -> int:
        return int(self.counts.shape[0])


def _rows(name: str, array: Any) -> int:
    if not hasattr(array, "shape") or len(array.shape) == 0:
        raise ValueError(
            f"{name} is {type(array).__name__} without rows; expected an array of shape "
            "(n_windows, ...), as returned by nbstream's reader"
        )
    return int(array.shape[0])


def retrieval_set(
    preds: dict[str, Any],
    group: str = "group",
    reduce: Literal["mean", "first"] = "mean",
    check: bool = False,
) -> RetrievalSet:
    """De-duplicate ``preds["y_true"]`` per group of ``preds["metadata"][group]``.

    Args:
        preds: ``{"metadata": DataFrame, "y_true": (n, ...) array, "y_pred": array}`` as
            returned by nbstream's reader (arrays may be read-only memmaps: they are streamed,
            never loaded whole). ``y_pred`` is optional; when present its length is checked.
        group: the metadata column naming each window's item. Missing labels (NaN/None)
            form one group of their own.
        reduce: ``"mean"`` (float64 accumulation; NaN in any window makes the group's mean
            NaN, unlike pandas, which skips NaN) or ``"first"`` (the first window's target,
            bit-exact, reading only those rows).
        check: also compare every window's target with its group's first one and report
            disagreements in ``RetrievalSet.inconsistent`` (costs one more pass over y_true).

    Example: top-k retrieval accuracy of y_pred against the set (cosine similarity).

    >>> import numpy as np, pandas as pd
    >>> from nbstream.retrieval import retrieval_set
    >>> rng = np.random.default_rng(0)
    >>> items = rng.normal(size=(6, 16))                 # 6 distinct items
    >>> item = np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3])  # item shown in each window
    >>> preds = {"metadata": pd.DataFrame({"group": [f"w{i}" for i in item]}),
    ...          "y_true": items[item],
    ...          "y_pred": items[item] + 0.3 * rng.normal(size=(10, 16))}
    >>> rs = retrieval_set(preds)
    >>> len(rs), rs.counts.tolist()
    (6, [2, 2, 2, 2, 1, 1])
    >>> unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    >>> sim = unit(preds["y_pred"]) @ unit(rs.targets).T    # (windows, candidates)
    >>> ranks = np.argsort(-sim, axis=1)
    >>> top1 = (ranks[:, :1] == rs.inverse[:, None]).any(axis=1).mean()
    >>> top5 = (ranks[:, :5] == rs.inverse[:, None]).any(axis=1).mean()
    >>> float(top1), float(top5)
    (1.0, 1.0)

    Raises:
        KeyError: ``preds`` lacks ``metadata``/``y_true``, or ``group`` is not a column.
        ValueError: metadata, y_true and y_pred disagree on the number of windows.
    """
    missing = [key for key in ("metadata", "y_true") if key not in preds]
    if missing:
        raise KeyError(
            f"preds has keys {sorted(preds)}, missing {missing}; expected the dict returned "
            "by nbstream's reader: {'metadata': DataFrame, 'y_true': array, 'y_pred': array}"
        )
    metadata, y_true = preds["metadata"], preds["y_true"]
    if group not in metadata.columns:
        raise KeyError(
            f"no group column {group!r} in the metadata; its columns are "
            f"{list(metadata.columns)}: pass group=<one of them> (the column naming each "
            "window's item, e.g. group='text')"
        )
    n = len(metadata)
    for name in ("y_true", "y_pred"):
        if name in preds and _rows(name, preds[name]) != n:
            raise ValueError(
                f"{name} has {_rows(name, preds[name])} rows but the metadata has {n}; "
                "each window needs one metadata row and one row in y_true and y_pred: "
                "were they read from the same folder?"
            )
    if reduce not in ("mean", "first"):
        raise ValueError(f"reduce={reduce!r}; expected 'mean' or 'first'")
    y_true = y_true if isinstance(y_true, np.ndarray) else np.asarray(y_true)
    codes, uniques = pd.factorize(metadata[group], sort=False, use_na_sentinel=False)
    index = kernels.group_index(codes, len(uniques))
    # The values as stored (None stays None). Only the k first rows are converted: turning a
    # whole Arrow-backed string column into Python objects costs more than the reduction.
    labels = metadata[group].iloc[index.firsts].to_numpy()
    targets = kernels.group_reduce(y_true, index, reduce)
    inconsistent = None
    if check:
        n_diff, max_diff = kernels.group_disagreement(y_true, index)
        bad = np.flatnonzero(n_diff)
        inconsistent = pd.DataFrame(
            {
                "group": labels[bad],
                "n_windows": index.counts[bad],
                "n_differing": n_diff[bad],
                "max_abs_diff": max_diff[bad],
            }
        )
    return RetrievalSet(labels, targets, index.counts, index.inverse, inconsistent)
