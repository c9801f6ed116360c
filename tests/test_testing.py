"""Tests of nbstream.testing's stand-ins for neuralbench batches."""

from __future__ import annotations

import torch

from nbstream.testing import Batch, FakeTrainer, Segment, Trigger, make_batch


def test_make_batch_segments() -> None:
    batch = make_batch(5)
    assert isinstance(batch, Batch)
    assert len(batch) == 5
    assert len(batch.segments) == 5
    assert all(isinstance(s, Segment) and isinstance(s.trigger, Trigger) for s in batch.segments)
    assert batch.data == {}


def test_make_batch_groups_cycle() -> None:
    batch = make_batch(7, start=2, n_groups=3)
    assert [s.trigger.text for s in batch.segments] == [
        "stim-002",
        "stim-000",
        "stim-001",
        "stim-002",
        "stim-000",
        "stim-001",
        "stim-002",
    ]
    assert all(s.trigger.category is None and s.trigger.filepath is None for s in batch.segments)


def test_make_batch_timelines() -> None:
    batch = make_batch(3, start=99, timeline="run")
    assert [s.timeline for s in batch.segments] == ["run-0", "run-1", "run-1"]


def test_make_batch_subject_ids_stored() -> None:
    ids = torch.tensor([4, 5, 6])
    batch = make_batch(3, subject_ids=ids)
    assert batch.data["subject_id"] is ids
    assert make_batch(2, subject_ids=[1, 2]).data == {"subject_id": [1, 2]}


def test_make_batch_empty() -> None:
    batch = make_batch(0)
    assert len(batch) == 0
    assert batch.segments == []


def test_fake_trainer_defaults() -> None:
    trainer = FakeTrainer()
    assert trainer.is_global_zero is True
    assert trainer.global_rank == 0
    assert trainer.num_test_batches == []
    assert FakeTrainer().num_test_batches is not trainer.num_test_batches
