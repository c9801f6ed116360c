"""The baseline (neuralbench 0.4.0's default collector) behaves as DESIGN.md describes it.

Equivalence tests and benchmarks compare nbstream against it, so its own behaviour is pinned
here: the round trip, the metadata omission rules, folder clearing and rank-zero-only writes.
"""

from __future__ import annotations

import math
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.baseline import DefaultCollector, read_default
from nbstream.testing import Batch, FakeTrainer, Segment, Trigger, make_batch


def _run(
    collector: DefaultCollector,
    batches: list[tuple[tp.Any, torch.Tensor, torch.Tensor]],
    trainer: FakeTrainer | None = None,
    dataloader_idx: tp.Sequence[int] | None = None,
) -> None:
    """Drive the hooks the way Lightning's test loop does."""
    trainer = trainer or FakeTrainer(num_test_batches=[len(batches)])
    collector.on_test_epoch_start(trainer, None)
    for i, (batch, y_pred, y_true) in enumerate(batches):
        dl = 0 if dataloader_idx is None else dataloader_idx[i]
        collector.on_test_batch_end(trainer, None, (y_pred, y_true), batch, i, dl)
    collector.on_test_epoch_end(trainer, None)


def _batches(
    sizes: tp.Sequence[int], subject: bool = True
) -> list[tuple[Batch, torch.Tensor, torch.Tensor]]:
    out = []
    start = 0
    for n in sizes:
        subjects = torch.arange(start, start + n) % 3 if subject else None
        batch = make_batch(n, start=start, subject_ids=subjects)
        y_pred = torch.arange(start * 4, (start + n) * 4, dtype=torch.float32).reshape(n, 4)
        y_true = torch.arange(start, start + n, dtype=torch.int64)
        out.append((batch, y_pred, y_true))
        start += n
    return out


def test_round_trip(tmp_path: Path) -> None:
    batches = _batches([5, 3, 4])
    _run(DefaultCollector(tmp_path), batches, dataloader_idx=[0, 0, 1])
    out = read_default(tmp_path)
    assert list(out) == ["metadata", "y_true", "y_pred"]
    np.testing.assert_array_equal(out["y_pred"], np.arange(48, dtype=np.float32).reshape(12, 4))
    np.testing.assert_array_equal(out["y_true"], np.arange(12))
    assert out["y_true"].dtype == np.int64
    meta = out["metadata"]
    assert list(meta.columns) == ["timeline", "batch_idx", "dataloader_idx", "subject_id", "group"]
    assert meta["batch_idx"].tolist() == [0] * 5 + [1] * 3 + [2] * 4
    assert meta["dataloader_idx"].tolist() == [0] * 8 + [1] * 4
    assert meta["subject_id"].tolist() == [i % 3 for i in range(12)]
    assert meta["group"].tolist() == [f"stim-{i % 8:03d}" for i in range(12)]
    assert meta["timeline"].tolist() == ["rec-0"] * 12


def test_chunk_keys_sort_past_ten_batches(tmp_path: Path) -> None:
    _run(DefaultCollector(tmp_path), _batches([1] * 12))
    out = read_default(tmp_path)
    np.testing.assert_array_equal(out["y_true"], np.arange(12))


def test_subject_id_list_and_missing(tmp_path: Path) -> None:
    batches = _batches([2, 2], subject=False)
    batches[0][0].data["subject_id"] = ["a", "b"]
    _run(DefaultCollector(tmp_path), batches)
    assert "subject_id" not in read_default(tmp_path)["metadata"].columns

    for batch, _, _ in batches:
        batch.data["subject_id"] = ["a", "b"]
    _run(DefaultCollector(tmp_path), batches)
    assert read_default(tmp_path)["metadata"]["subject_id"].tolist() == ["a", "b"] * 2


def _one_window_batches(triggers: list[Trigger | None]) -> list[tuple[Batch, tp.Any, tp.Any]]:
    return [
        (Batch([Segment("t", trig)]), torch.zeros(1, 2), torch.zeros(1, dtype=torch.int64))
        for trig in triggers
    ]


def test_group_fallbacks(tmp_path: Path) -> None:
    triggers = [
        Trigger(text="a", category="c", filepath="f"),
        Trigger(text=None, category="c", filepath="f"),
        Trigger(text=math.nan, filepath="f"),  # type: ignore[arg-type]
    ]
    _run(DefaultCollector(tmp_path), _one_window_batches(triggers))
    assert read_default(tmp_path)["metadata"]["group"].tolist() == ["a", "c", "f"]

    _run(DefaultCollector(tmp_path, group_field="category"), _one_window_batches(triggers[:2]))
    assert read_default(tmp_path)["metadata"]["group"].tolist() == ["c", "c"]


@pytest.mark.parametrize("missing", [None, Trigger(), Trigger(text=math.nan)])  # type: ignore[arg-type]
def test_group_dropped_when_one_window_lacks_it(tmp_path: Path, missing: Trigger | None) -> None:
    _run(DefaultCollector(tmp_path), _one_window_batches([Trigger(text="a"), missing]))
    meta = read_default(tmp_path)["metadata"]
    assert "group" not in meta.columns
    assert len(meta) == 2


def test_empty_batch_skipped(tmp_path: Path) -> None:
    batches = _batches([2, 0, 3])
    _run(DefaultCollector(tmp_path), batches)
    out = read_default(tmp_path)
    assert len(out["metadata"]) == len(out["y_pred"]) == 5
    assert out["metadata"]["batch_idx"].tolist() == [0, 0, 2, 2, 2]


def test_folder_cleared_each_epoch(tmp_path: Path) -> None:
    collector = DefaultCollector(tmp_path)
    _run(collector, _batches([4, 4]))
    _run(collector, _batches([3]))
    out = read_default(tmp_path)
    assert len(out["y_pred"]) == len(out["metadata"]) == 3
    # Stray content from elsewhere goes too.
    (tmp_path / "stray.txt").write_text("x")
    _run(collector, _batches([1]))
    assert not (tmp_path / "stray.txt").exists()


def test_non_zero_rank_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    trainer = FakeTrainer(is_global_zero=False, global_rank=1)
    _run(DefaultCollector(tmp_path), _batches([2, 2]), trainer=trainer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
