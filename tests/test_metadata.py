"""Tests of nbstream.metadata: the default collector's columns and omission rules."""

from __future__ import annotations

import dataclasses
import math
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nbstream.metadata import WindowMetadata, _groups_of, group_of
from nbstream.testing import Segment, Trigger, make_batch

ALL_COLUMNS = ["timeline", "batch_idx", "dataloader_idx", "subject_id", "group"]


def _segments(groups: list, timeline: str = "rec") -> list[Segment]:
    return [
        Segment(timeline=f"{timeline}-{i}", trigger=Trigger(text=g)) for i, g in enumerate(groups)
    ]


@dataclasses.dataclass
class _PathTrigger:
    filepath: Path


# -- group_of ------------------------------------------------------------------------------
def test_group_of_prefers_group_field() -> None:
    trigger = Trigger(text="hello", category="cat", filepath="/a/b.wav")
    assert group_of(Segment("t", trigger), "text") == "hello"


def test_group_of_custom_field() -> None:
    @dataclasses.dataclass
    class WordTrigger:
        word: str | None = None
        category: str | None = None

    assert group_of(Segment("t", WordTrigger(word="dog", category="noun")), "word") == "dog"
    assert group_of(Segment("t", WordTrigger(category="noun")), "word") == "noun"


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        (Trigger(text=None, category="cat", filepath="f.wav"), "cat"),
        (Trigger(text=None, category=None, filepath="f.wav"), "f.wav"),
        (Trigger(text=math.nan, category="cat"), "cat"),  # type: ignore[arg-type]
        (Trigger(text=math.nan, category=math.nan, filepath="f"), "f"),  # type: ignore[arg-type]
        (Trigger(text=np.float64("nan"), category="cat"), "cat"),  # type: ignore[arg-type]
        (Trigger(), None),
        (Trigger(text=math.nan), None),  # type: ignore[arg-type]
    ],
)
def test_group_of_fallbacks(trigger: Trigger, expected) -> None:
    assert group_of(Segment("t", trigger), "text") == expected


def test_group_of_path_becomes_str() -> None:
    value = group_of(Segment("t", _PathTrigger(Path("/data/a.wav"))), "text")
    assert value == "/data/a.wav"
    assert type(value) is str


def test_group_of_dict_trigger() -> None:
    assert group_of(Segment("t", {"text": "w", "category": "c"}), "text") == "w"  # type: ignore[arg-type]
    assert group_of(Segment("t", {"category": "c"}), "text") == "c"  # type: ignore[arg-type]
    assert group_of(Segment("t", {"text": math.nan, "filepath": Path("x.fif")}), "text") == (  # type: ignore[arg-type]
        "x.fif"
    )
    assert group_of(Segment("t", {"other": 1}), "text") is None  # type: ignore[arg-type]


def test_group_of_keeps_non_string_values() -> None:
    assert group_of(Segment("t", {"text": 7}), "text") == 7  # type: ignore[arg-type]
    assert group_of(Segment("t", {"text": ""}), "text") == ""  # type: ignore[arg-type]


@pytest.mark.parametrize("trigger", [None, math.nan])
def test_group_of_missing_trigger(trigger) -> None:
    assert group_of(Segment("t", trigger), "text") is None


def test_group_of_segment_without_trigger_attribute() -> None:
    class Bare:
        timeline = "t"

    assert group_of(Bare(), "text") is None


@pytest.mark.parametrize(
    "segments",
    [
        _segments(["a", "b", "a"]),
        _segments(["a", None, "c"]),
        _segments(["a", math.nan]),
        _segments([1, 2]),
        [Segment("r", Trigger(text=None, category="cat")), *_segments(["a"])],
        [Segment("r", None), *_segments(["a"])],
        [Segment("r", {"text": "d"}), *_segments(["a"])],  # type: ignore[arg-type]
        [Segment("r", _PathTrigger(Path("/x.wav"))), *_segments(["a"])],  # type: ignore[arg-type]
        [],
    ],
    ids=["str", "none", "nan", "int", "fallback", "no-trigger", "dict", "path", "empty"],
)
def test_batch_groups_match_group_of(segments: list[Segment]) -> None:
    """The whole-batch fast path gives group_of's answer for every window, whatever it is."""
    values, complete = _groups_of(segments, "text")
    expected = [group_of(s, "text") for s in segments]
    assert values == expected  # NaN included: both turn it into None
    assert complete == all(v is not None for v in expected)


# -- WindowMetadata --------------------------------------------------------------------------
def test_columns_and_order() -> None:
    meta = WindowMetadata()
    meta.add(_segments(["a", "b"]), torch.tensor([3, 4]), batch_idx=0, dataloader_idx=0)
    meta.add(_segments(["007"], timeline="x"), torch.tensor([5]), batch_idx=1, dataloader_idx=2)
    assert len(meta) == 3
    frame = meta.to_frame()
    assert list(frame.columns) == ALL_COLUMNS
    expected = pd.DataFrame(
        {
            "timeline": ["rec-0", "rec-1", "x-0"],
            "batch_idx": np.array([0, 0, 1], dtype=np.int64),
            "dataloader_idx": np.array([0, 0, 2], dtype=np.int64),
            "subject_id": [3, 4, 5],
            "group": ["a", "b", "007"],
        }
    )
    pd.testing.assert_frame_equal(frame, expected)
    assert frame["group"].tolist()[2] == "007"
    assert frame["batch_idx"].dtype == np.int64
    assert frame["dataloader_idx"].dtype == np.int64


@pytest.mark.parametrize(
    "subject_ids",
    [
        pytest.param(lambda ids: torch.tensor(ids), id="tensor"),
        pytest.param(lambda ids: list(ids), id="list"),
        pytest.param(lambda ids: tuple(ids), id="tuple"),
        pytest.param(lambda ids: np.asarray(ids), id="numpy"),
    ],
)
def test_subject_id_inputs(subject_ids) -> None:
    meta = WindowMetadata()
    meta.add(_segments(["a", "b", "c"]), subject_ids([1, 2, 3]), batch_idx=0, dataloader_idx=0)
    meta.add(_segments(["d"]), subject_ids([9]), batch_idx=1, dataloader_idx=0)
    frame = meta.to_frame()
    assert frame["subject_id"].tolist() == [1, 2, 3, 9]
    assert all(type(v) is int for v in meta.subject_id)  # plain Python values, not tensors


def test_string_subject_ids() -> None:
    meta = WindowMetadata()
    meta.add(_segments(["a", "b"]), ["sub-01", "sub-02"], batch_idx=0, dataloader_idx=0)
    assert meta.to_frame()["subject_id"].tolist() == ["sub-01", "sub-02"]


def test_single_window_scalar_subject() -> None:
    meta = WindowMetadata()
    meta.add(_segments(["a"]), torch.tensor(4), batch_idx=0, dataloader_idx=0)
    meta.add(_segments(["b"]), "sub-7", batch_idx=1, dataloader_idx=0)
    # one typed column: mixed ids become strings rather than failing to save
    assert meta.to_frame()["subject_id"].tolist() == ["4", "sub-7"]


@pytest.mark.parametrize("missing_at", [0, 1, 2])
def test_subject_id_dropped_unless_every_batch(missing_at: int) -> None:
    meta = WindowMetadata()
    for b in range(3):
        ids = None if b == missing_at else torch.tensor([b, b])
        meta.add(_segments(["a", "b"]), ids, batch_idx=b, dataloader_idx=0)
    frame = meta.to_frame()
    assert "subject_id" not in frame.columns
    assert list(frame.columns) == ["timeline", "batch_idx", "dataloader_idx", "group"]
    assert len(frame) == 6
    assert meta.subject_id == []


@pytest.mark.parametrize(
    "ids", [torch.tensor([1, 2]), [1, 2, 3, 4], np.arange(2)], ids=["tensor", "list", "numpy"]
)
def test_subject_id_length_mismatch(ids) -> None:
    meta = WindowMetadata()
    meta.add(_segments(["a"]), [0], batch_idx=0, dataloader_idx=0)
    n = len(ids)
    with pytest.raises(
        ValueError, match=rf"batch.data\['subject_id'\] has {n} values for 3 segments"
    ):
        meta.add(_segments(["a", "b", "c"]), ids, batch_idx=1, dataloader_idx=0)
    # the failed batch left no trace
    assert len(meta) == 1
    frame = meta.to_frame()
    assert frame["subject_id"].tolist() == [0]
    assert frame["group"].tolist() == ["a"]


def test_length_mismatch_ignored_once_subjects_dropped() -> None:
    meta = WindowMetadata()
    meta.add(_segments(["a"]), None, batch_idx=0, dataloader_idx=0)
    meta.add(_segments(["a", "b"]), [1], batch_idx=1, dataloader_idx=0)
    assert "subject_id" not in meta.to_frame().columns


@pytest.mark.parametrize("missing", [None, math.nan, Trigger(), {"other": "x"}])
@pytest.mark.parametrize("where", [0, 3, 5])
def test_group_dropped_if_any_window_lacks_one(missing, where: int) -> None:
    segments = _segments(["a", "b", "c", "d", "e", "f"])
    segments[where] = Segment(timeline="gap", trigger=missing)
    meta = WindowMetadata()
    meta.add(segments[:2], [1, 1], batch_idx=0, dataloader_idx=0)
    meta.add(segments[2:4], [2, 2], batch_idx=1, dataloader_idx=0)
    meta.add(segments[4:], [3, 3], batch_idx=2, dataloader_idx=0)
    frame = meta.to_frame()
    assert list(frame.columns) == ["timeline", "batch_idx", "dataloader_idx", "subject_id"]
    assert frame["timeline"].tolist()[where] == "gap"
    assert meta.group == []


def test_group_falls_back_per_window() -> None:
    segments = [
        Segment("r", Trigger(text="w")),
        Segment("r", Trigger(category="c")),
        Segment("r", Trigger(filepath="f.wav")),
        Segment("r", {"text": "d"}),  # type: ignore[arg-type]
        Segment("r", _PathTrigger(Path("p/q.fif"))),  # type: ignore[arg-type]
    ]
    meta = WindowMetadata()
    meta.add(segments, None, batch_idx=0, dataloader_idx=0)
    frame = meta.to_frame()
    assert list(frame.columns) == ["timeline", "batch_idx", "dataloader_idx", "group"]
    assert frame["group"].tolist() == ["w", "c", "f.wav", "d", "p/q.fif"]


def test_group_field_option() -> None:
    meta = WindowMetadata(group_field="category")
    meta.add(
        [Segment("r", Trigger(text="w", category="c")), Segment("r", Trigger(text="w2"))],
        None,
        batch_idx=0,
        dataloader_idx=0,
    )
    # the first window has the field; the second falls back past text (not a fallback
    # field) to nothing: category None, filepath None
    assert "group" not in meta.to_frame().columns


def test_group_field_option_with_values() -> None:
    meta = WindowMetadata(group_field="filepath")
    meta.add(
        [Segment("r", Trigger(text="w", filepath="a.wav")), Segment("r", Trigger(category="c"))],
        None,
        batch_idx=0,
        dataloader_idx=0,
    )
    assert meta.to_frame()["group"].tolist() == ["a.wav", "c"]


def test_to_frame_cut() -> None:
    meta = WindowMetadata()
    for b in range(4):
        meta.add(_segments(["a", "b", "c"]), [b] * 3, batch_idx=b, dataloader_idx=0)
    full = meta.to_frame()
    cut = meta.to_frame(5)
    assert len(cut) == 5
    assert list(cut.index) == list(range(5))
    pd.testing.assert_frame_equal(cut, full.iloc[:5])
    assert len(meta.to_frame(0)) == 0
    assert list(meta.to_frame(0).columns) == ALL_COLUMNS
    assert len(meta.to_frame(100)) == 12


def test_empty_metadata() -> None:
    meta = WindowMetadata()
    assert len(meta) == 0
    frame = meta.to_frame()
    assert list(frame.columns) == ["timeline", "batch_idx", "dataloader_idx"]
    assert len(frame) == 0
    assert frame["batch_idx"].dtype == np.int64


def test_empty_batch() -> None:
    meta = WindowMetadata()
    meta.add([], torch.tensor([], dtype=torch.int64), batch_idx=0, dataloader_idx=0)
    meta.add(_segments(["a"]), [1], batch_idx=1, dataloader_idx=0)
    assert meta.to_frame()["subject_id"].tolist() == [1]


def test_with_make_batch() -> None:
    meta = WindowMetadata()
    for b in range(3):
        batch = make_batch(4, start=4 * b, n_groups=3, subject_ids=torch.arange(4) + b)
        meta.add(batch.segments, batch.data.get("subject_id"), batch_idx=b, dataloader_idx=0)
    frame = meta.to_frame()
    assert list(frame.columns) == ALL_COLUMNS
    assert frame["group"].tolist() == [f"stim-{i % 3:03d}" for i in range(12)]
    assert frame["batch_idx"].tolist() == [0] * 4 + [1] * 4 + [2] * 4


# -- the Arrow table built while the writer is idle ---------------------------------------
def _batches(kind: str) -> list[tuple[list[Segment], tp.Any]]:
    """Batches of 3 windows whose subject ids or groups exercise one case of ``to_table``."""
    plain = [(_segments(["a", "b", "c"], timeline=f"r{b}"), [b, b + 1, b + 2]) for b in range(4)]
    if kind == "plain":
        return plain
    if kind == "mixed subject types across chunks":  # pandas turns the column into strings
        return [*plain[:2], (_segments(["a", "b", "c"]), ["s1", "s2", "s3"])]
    if kind == "mixed subject types in a chunk":
        return [*plain[:2], (_segments(["a", "b", "c"]), [1, "s2", 3.5])]
    if kind == "subject dropped after a seal":
        return [*plain[:2], (_segments(["a", "b", "c"]), None), plain[3]]
    if kind == "group dropped after a seal":
        return [*plain[:2], (_segments(["a", None, "c"]), [0, 1, 2]), plain[3]]
    if kind == "float subjects with NaN":
        return [(_segments(["a", "b"]), [1.5, math.nan]), (_segments(["c"]), [2.0])]
    if kind == "bool subjects":
        return [(_segments(["a", "b"]), [True, False]), (_segments(["c"]), [True])]
    if kind.endswith("int timelines"):
        segments = [Segment(timeline=i, trigger=Trigger(text="g")) for i in range(3)]  # type: ignore[arg-type]
        return [(segments, [1, 2, 3])] * 2 + (plain[:1] if kind.startswith("mixed") else [])
    if kind == "no windows":
        return []
    raise AssertionError(kind)


_TABLE_CASES = [
    "plain",
    "mixed subject types across chunks",
    "mixed subject types in a chunk",
    "subject dropped after a seal",
    "group dropped after a seal",
    "float subjects with NaN",
    "bool subjects",
    "int timelines",
    "mixed str and int timelines",
    "no windows",
]


@pytest.mark.parametrize("kind", _TABLE_CASES)
@pytest.mark.parametrize("seal_every", [None, 1, 4])
@pytest.mark.parametrize("n_rows", [None, 0, 4])
def test_table_reads_back_as_the_frame(tmp_path: Path, kind: str, seal_every, n_rows) -> None:
    """Whatever was sealed when: the Parquet file reads back as pandas' own table would."""
    import pyarrow.parquet as pq

    meta, never_sealed = WindowMetadata(), WindowMetadata()
    for b, (segments, subjects) in enumerate(_batches(kind)):
        meta.add(segments, subjects, batch_idx=b, dataloader_idx=b % 2)
        never_sealed.add(segments, subjects, batch_idx=b, dataloader_idx=b % 2)
        if seal_every is not None:
            meta.seal(min_rows=seal_every)
    assert len(meta) == len(never_sealed)
    table = meta.to_table(n_rows)
    frame = never_sealed.to_frame(n_rows)
    # the sealed rows come back as the same Python values when pandas needs them
    pd.testing.assert_frame_equal(meta.to_frame(n_rows), frame)
    pq.write_table(table, tmp_path / "arrow.parquet")
    frame.to_parquet(tmp_path / "pandas.parquet", index=False)
    got = pd.read_parquet(tmp_path / "arrow.parquet")
    pd.testing.assert_frame_equal(got, pd.read_parquet(tmp_path / "pandas.parquet"))
    pd.testing.assert_series_equal(table.schema.empty_table().to_pandas().dtypes, frame.dtypes)


def test_sealed_rows_leave_the_python_lists() -> None:
    """Sealed rows are freed as they are sealed (on the writer, between batches)."""
    meta = WindowMetadata()
    meta.add(_segments(["a", "b"]), [1, 2], batch_idx=0, dataloader_idx=0)
    meta.seal(min_rows=1)
    assert (len(meta), meta.sealed_rows, meta.timeline, meta.group, meta.subject_id) == (
        2,
        2,
        [],
        [],
        [],
    )
    meta.add(_segments(["c"]), [3], batch_idx=1, dataloader_idx=0)
    assert len(meta) == 3
    assert meta.to_table().column("group").to_pylist() == ["a", "b", "c"]
    assert meta.to_frame()["subject_id"].tolist() == [1, 2, 3]


def test_seal_waits_for_enough_rows() -> None:
    meta = WindowMetadata()
    meta.add(_segments(["a", "b", "c"]), [1, 2, 3], batch_idx=0, dataloader_idx=0)
    meta.seal(min_rows=4)
    assert meta.sealed_rows == 0
    meta.add(_segments(["d"]), [4], batch_idx=1, dataloader_idx=0)
    meta.seal(min_rows=4)
    assert meta.sealed_rows == 4
    assert meta.to_table().column("group").to_pylist() == ["a", "b", "c", "d"]


def test_collector_seals_metadata_while_idle(tmp_path: Path, monkeypatch) -> None:
    """The writer thread builds the table between batches; the file holds every row."""
    import threading
    import time

    import nbstream.metadata
    from nbstream import WindowPredictionCollector, read_predictions
    from nbstream.testing import FakeTrainer

    monkeypatch.setattr(nbstream.metadata, "SEAL_ROWS", 8)
    sealed_on_writer: list[int] = []
    seal = WindowMetadata.seal

    def spy(self: WindowMetadata, min_rows: int | None = None) -> None:
        seal(self, min_rows)
        if threading.current_thread() is not threading.main_thread():
            sealed_on_writer.append(self.sealed_rows)

    monkeypatch.setattr(WindowMetadata, "seal", spy)
    collector = WindowPredictionCollector(tmp_path / "preds", fsync=False)
    trainer = FakeTrainer(num_test_batches=[4])
    collector.on_test_epoch_start(trainer, None)
    for b in range(4):
        batch = make_batch(8, start=8 * b, subject_ids=torch.arange(8))
        collector.on_test_batch_end(
            trainer, None, (torch.ones(8, 2), torch.zeros(8, 2)), batch, b, 0
        )
    deadline = time.monotonic() + 10
    while 32 not in sealed_on_writer and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 32 in sealed_on_writer
    collector.on_test_epoch_end(trainer, None)
    frame = read_predictions(tmp_path / "preds")["metadata"]
    assert frame["subject_id"].tolist() == list(range(8)) * 4
    assert frame["batch_idx"].tolist() == [b for b in range(4) for _ in range(8)]
