"""nbstream.retrieval.retrieval_set against the idiomatic pandas way (tests/naive.py)."""

from __future__ import annotations

import dataclasses
import doctest
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbstream import retrieval
from nbstream.retrieval import RetrievalSet, retrieval_set

from . import naive


def _preds(labels: list, trailing: tuple[int, ...] = (4,), seed: int = 0) -> dict:
    """Windows whose targets are the same within a group (as in a real retrieval task)."""
    rng = np.random.default_rng(seed)
    codes, uniques = pd.factorize(pd.Series(labels, dtype=object), use_na_sentinel=False)
    items = rng.normal(size=(len(uniques), *trailing)).astype(np.float32)
    y_true = items[codes]
    return {
        "metadata": pd.DataFrame({"group": pd.Series(labels, dtype=object), "subject": 0}),
        "y_true": y_true,
        "y_pred": y_true + rng.normal(size=y_true.shape).astype(np.float32),
    }


def _check(rs: RetrievalSet, preds: dict, reduce: str) -> None:
    labels, targets, counts, inverse = naive.retrieval_set(
        preds["metadata"], preds["y_true"], "group", reduce
    )
    np.testing.assert_array_equal(rs.labels.astype(object), labels.astype(object))
    np.testing.assert_allclose(rs.targets, targets, rtol=1e-6)
    np.testing.assert_array_equal(rs.counts, counts)
    np.testing.assert_array_equal(rs.inverse, inverse)
    assert rs.inverse.dtype == rs.counts.dtype == np.int64
    assert len(rs) == len(labels)


LABELS = {
    "one row": ["a"],
    "one group": ["a"] * 5,
    "all unique": list("edcba"),
    "strings": ["007", "b", "007", "c", "b", "007"],
    "ints": [5, 3, 5, 5, 1, 3],
    "with missing": ["a", None, "b", None, "a"],
}


@pytest.mark.parametrize("reduce", ["mean", "first"])
@pytest.mark.parametrize("labels", LABELS.values(), ids=LABELS.keys())
def test_matches_pandas(path: str, labels: list, reduce: str) -> None:
    preds = _preds(labels)
    rs = retrieval_set(preds, reduce=reduce)  # type: ignore[arg-type]
    _check(rs, preds, reduce)
    if reduce == "first":
        assert rs.targets.dtype == np.float32
    assert rs.inconsistent is None


@pytest.mark.parametrize("trailing", [(), (3,), (2, 3), (2, 1, 3)], ids=str)
def test_trailing_shapes_from_a_read_only_memmap(path: str, tmp_path: Path, trailing) -> None:
    preds = _preds(["x", "y", "x", "z", "y", "x"] * 3, trailing)
    np.save(tmp_path / "y_true.npy", preds["y_true"])
    preds["y_true"] = np.load(tmp_path / "y_true.npy", mmap_mode="r")
    for reduce in ("mean", "first"):
        rs = retrieval_set(preds, reduce=reduce, check=True)  # type: ignore[arg-type]
        _check(rs, preds, reduce)
        assert rs.targets.shape == (3, *trailing)
        assert rs.inconsistent is not None and rs.inconsistent.empty


def test_empty(path: str) -> None:
    preds = {
        "metadata": pd.DataFrame({"group": pd.Series([], dtype=object)}),
        "y_true": np.empty((0, 8), np.float32),
        "y_pred": np.empty((0, 8), np.float32),
    }
    rs = retrieval_set(preds, check=True)
    assert rs.targets.shape == (0, 8) and rs.labels.shape == rs.counts.shape == (0,)
    assert rs.inconsistent is not None and rs.inconsistent.empty


def test_check_reports_inconsistent_groups(path: str) -> None:
    preds = _preds(["a", "b", "a", "c", "b", "a", "c"], (3,))
    preds["y_true"] = preds["y_true"].copy()
    preds["y_true"][2, 1] += 0.5  # a: one window off by 0.5
    preds["y_true"][6, 0] = np.nan  # c: NaN against a number
    rs = retrieval_set(preds, check=True)
    assert rs.inconsistent is not None
    got = rs.inconsistent.to_dict("list")
    assert got["group"] == ["a", "c"]
    assert got["n_windows"] == [3, 2] and got["n_differing"] == [1, 1]
    np.testing.assert_allclose(got["max_abs_diff"], [0.5, np.inf], rtol=1e-6)
    assert np.isnan(rs.targets[2, 0])  # the mean of a group with a NaN window is NaN


def test_result_is_frozen() -> None:
    rs = retrieval_set(_preds(["a", "b"]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        rs.targets = np.zeros(1)  # type: ignore[misc]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    labels=st.lists(st.sampled_from(["p", "q", "r", "s", None]), min_size=1, max_size=30),
    reduce=st.sampled_from(["mean", "first"]),
)
def test_matches_pandas_property(path: str, labels: list, reduce: str) -> None:
    preds = _preds(labels, (2, 2))
    preds["y_true"] = preds["y_true"] + np.arange(len(labels), dtype=np.float32)[:, None, None]
    _check(retrieval_set(preds, reduce=reduce), preds, reduce)  # type: ignore[arg-type]


def test_errors() -> None:
    preds = _preds(["a", "b", "a"])
    with pytest.raises(KeyError, match=r"no group column 'text'.*\['group', 'subject'\]"):
        retrieval_set(preds, group="text")
    with pytest.raises(ValueError, match="y_true has 2 rows but the metadata has 3"):
        retrieval_set({**preds, "y_true": preds["y_true"][:2]})
    with pytest.raises(ValueError, match="y_pred has 4 rows but the metadata has 3"):
        retrieval_set({**preds, "y_pred": np.zeros((4, 4))})
    with pytest.raises(KeyError, match=r"missing \['y_true'\]"):
        retrieval_set({"metadata": preds["metadata"]})
    with pytest.raises(ValueError, match=r"reduce='median'; expected 'mean' or 'first'"):
        retrieval_set(preds, reduce="median")  # type: ignore[arg-type]


def test_docstring_example_runs() -> None:
    result = doctest.testmod(retrieval, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
