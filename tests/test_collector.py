"""The collector's contract, driven hook by hook (light stand-ins for trainer and batches)."""

from __future__ import annotations

import os
import typing as tp
from pathlib import Path

import ml_dtypes
import numpy as np
import pandas as pd
import pytest
import torch

from nbstream import (
    PredictionFormatError,
    StoppedEarlyWarning,
    WindowPredictionCollector,
    WriterError,
    read_predictions,
)
from nbstream.store import GrowableNpy
from nbstream.testing import Batch, FakeTrainer, Segment, make_batch

WRITER_MODES = [pytest.param(False, id="async"), pytest.param(True, id="sync")]


def run_epoch(
    collector: WindowPredictionCollector,
    batches: tp.Iterable[tuple[tp.Any, tp.Any]],
    trainer: FakeTrainer | None = None,
    end: bool = True,
) -> None:
    trainer = trainer or FakeTrainer(num_test_batches=[4])
    collector.on_test_epoch_start(trainer, None)
    for i, (outputs, batch) in enumerate(batches):
        collector.on_test_batch_end(trainer, None, outputs, batch, i, 0)
    if end:
        collector.on_test_epoch_end(trainer, None)


OUTPUTS = {
    "logits-f32": (torch.float32, (4,)),
    "regression-f64": (torch.float64, (50,)),
    "embedding-f16": (torch.float16, (16,)),
    "embedding-bf16": (torch.bfloat16, (16,)),
    "ctc-logprobs": (torch.float32, (7, 5)),
    "labels-i64": (torch.int64, ()),
    "mask-bool": (torch.bool, (2, 3, 2)),
}


@pytest.mark.parametrize("synchronous", WRITER_MODES)
@pytest.mark.parametrize("kind", OUTPUTS)
def test_round_trip_is_bit_exact(tmp_path: Path, kind: str, synchronous: bool) -> None:
    dtype, shape = OUTPUTS[kind]
    generator = torch.Generator().manual_seed(0)

    def output(n: int) -> torch.Tensor:
        if dtype == torch.bool:
            return torch.rand(n, *shape, generator=generator) > 0.5
        if dtype == torch.int64:
            return torch.randint(0, 99, (n, *shape), generator=generator)
        values = torch.randn(n, *shape, generator=generator).to(dtype)
        values.view(-1)[:1] = float("nan")
        return values

    sizes = [3, 8, 8, 1, 8]
    outputs = [(output(n), output(n)) for n in sizes]
    batches = [make_batch(n, start=sum(sizes[:i])) for i, n in enumerate(sizes)]
    collector = WindowPredictionCollector(tmp_path, synchronous=synchronous)
    run_epoch(collector, zip(outputs, batches, strict=True))

    preds = read_predictions(tmp_path)
    for index, key in enumerate(("y_pred", "y_true")):
        want = torch.cat([o[index] for o in outputs])
        got = preds[key]
        assert got.shape == tuple(want.shape)
        if dtype == torch.bfloat16:
            assert got.dtype == ml_dtypes.bfloat16
        raw = np.asarray(got).view(np.uint8)
        assert raw.tobytes() == want.contiguous().view(torch.uint8).numpy().tobytes()
        # standard .npy: numpy alone opens it
        plain = np.load(tmp_path / f"{key}.npy", mmap_mode="r")
        assert plain.shape == tuple(want.shape)


def test_metadata_columns_and_groups(tmp_path: Path) -> None:
    collector = WindowPredictionCollector(tmp_path)
    batches = [make_batch(4, start=4 * i, subject_ids=torch.tensor([7, 7, 8, 9])) for i in range(3)]
    run_epoch(collector, [((torch.ones(4, 2), torch.ones(4)), b) for b in batches])
    meta = read_predictions(tmp_path)["metadata"]
    assert list(meta.columns) == ["timeline", "batch_idx", "dataloader_idx", "subject_id", "group"]
    assert meta["subject_id"].tolist() == [7, 7, 8, 9] * 3
    assert meta["group"].tolist()[:3] == ["stim-000", "stim-001", "stim-002"]
    assert pd.api.types.is_string_dtype(meta["group"])


def test_columns_left_out_unless_every_window_has_them(tmp_path: Path) -> None:
    collector = WindowPredictionCollector(tmp_path)
    with_subject = make_batch(2, subject_ids=[1, 2])
    without_trigger = Batch(segments=[Segment("rec-9"), Segment("rec-9")])
    run_epoch(
        collector,
        [
            ((torch.ones(2), torch.ones(2)), with_subject),
            ((torch.ones(2), torch.ones(2)), without_trigger),
        ],
    )
    meta = read_predictions(tmp_path)["metadata"]
    assert list(meta.columns) == ["timeline", "batch_idx", "dataloader_idx"]


def test_group_keeps_string_dtype_exactly(tmp_path: Path) -> None:
    collector = WindowPredictionCollector(tmp_path, group_field="category")
    batch = Batch(segments=[Segment("r", trigger={"category": "007"}) for _ in range(3)])
    run_epoch(collector, [((torch.ones(3), torch.ones(3)), batch)])
    meta = read_predictions(tmp_path)["metadata"]
    assert meta["group"].tolist() == ["007"] * 3


def test_empty_batch_is_skipped(tmp_path: Path) -> None:
    collector = WindowPredictionCollector(tmp_path)
    run_epoch(
        collector,
        [
            ((torch.ones(0, 3), torch.ones(0)), make_batch(0)),
            ((torch.ones(2, 3), torch.ones(2)), make_batch(2)),
        ],
    )
    preds = read_predictions(tmp_path)
    assert preds["y_pred"].shape == (2, 3)
    assert preds["metadata"]["batch_idx"].tolist() == [1, 1]


def test_no_batches_gives_an_empty_readable_folder(tmp_path: Path) -> None:
    collector = WindowPredictionCollector(tmp_path)
    run_epoch(collector, [])
    preds = read_predictions(tmp_path)
    assert len(preds["y_pred"]) == len(preds["metadata"]) == 0


def test_non_zero_rank_writes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "preds"
    collector = WindowPredictionCollector(folder)
    trainer = FakeTrainer(is_global_zero=False, global_rank=1)
    run_epoch(collector, [((torch.ones(2), torch.ones(2)), make_batch(2))], trainer=trainer)
    assert not folder.exists()


BAD_OUTPUTS = [
    pytest.param(torch.ones(4), r"test_step returned Tensor; .*\(y_pred, y_true\) pair", id="bare"),
    pytest.param((torch.ones(4),), r"returned a tuple of 1 items", id="one"),
    pytest.param({"y_pred": torch.ones(4)}, r"returned dict", id="dict"),
    pytest.param(
        (np.ones(4), torch.ones(4)), r"y_pred is a ndarray, expected a torch.Tensor", id="numpy"
    ),
    pytest.param(
        (torch.ones(3, 2), torch.ones(4)),
        r"y_pred has 3 rows but the batch has 4 segments",
        id="rows",
    ),
    pytest.param(
        (torch.ones(4), torch.tensor(1.0)),
        r"y_true has no rows but the batch has 4 segments",
        id="scalar",
    ),
    pytest.param(
        (torch.ones(4, 3), torch.ones(4)),
        r"y_pred changed from dtype torch.float32, shape \(n, 2\) to dtype "
        r"torch.float32, shape \(4, 3\)",
        id="shape",
    ),
    pytest.param(
        (torch.ones(4, 2, dtype=torch.float64), torch.ones(4)),
        r"y_pred changed from dtype torch.float32",
        id="dtype",
    ),
]


@pytest.mark.parametrize("synchronous", WRITER_MODES)
@pytest.mark.parametrize(("outputs", "message"), BAD_OUTPUTS)
def test_bad_outputs_raise_and_keep_what_was_written(
    tmp_path: Path, outputs: tp.Any, message: str, synchronous: bool
) -> None:
    collector = WindowPredictionCollector(tmp_path, synchronous=synchronous)
    trainer = FakeTrainer(num_test_batches=[3])
    good = (torch.arange(8.0).view(4, 2), torch.arange(4.0))
    collector.on_test_epoch_start(trainer, None)
    collector.on_test_batch_end(trainer, None, good, make_batch(4), 0)
    with pytest.raises(PredictionFormatError, match=message):
        collector.on_test_batch_end(trainer, None, outputs, make_batch(4, start=4), 1)
    collector.on_exception(trainer, None, PredictionFormatError("bad"))
    with pytest.warns(StoppedEarlyWarning, match="bad"):
        preds = read_predictions(tmp_path)
    np.testing.assert_array_equal(preds["y_pred"], good[0].numpy())


def test_batch_without_segments_is_refused(tmp_path: Path) -> None:
    collector = WindowPredictionCollector(tmp_path)
    collector.on_test_epoch_start(FakeTrainer(), None)
    with pytest.raises(PredictionFormatError, match=r"the test batch \(dict\) has no .segments"):
        collector.on_test_batch_end(FakeTrainer(), None, (torch.ones(1), torch.ones(1)), {}, 0)
    collector.teardown(FakeTrainer(), None, "test")


@pytest.mark.parametrize("synchronous", WRITER_MODES)
def test_writer_failure_surfaces_and_intact_windows_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synchronous: bool
) -> None:
    original = GrowableNpy.append
    calls = {"n": 0}

    def failing_append(self: GrowableNpy, rows: torch.Tensor) -> None:
        calls["n"] += 1
        if calls["n"] == 5:  # y_pred of the third batch
            raise OSError(28, "No space left on device")
        original(self, rows)

    monkeypatch.setattr(GrowableNpy, "append", failing_append)
    collector = WindowPredictionCollector(tmp_path, synchronous=synchronous)
    trainer = FakeTrainer(num_test_batches=[20])
    collector.on_test_epoch_start(trainer, None)
    with pytest.raises(WriterError, match=r"writing y_pred of batch 2 of dataloader 0 failed"):
        for i in range(20):
            outputs = (torch.full((4, 2), float(i)), torch.full((4,), float(i)))
            collector.on_test_batch_end(trainer, None, outputs, make_batch(4, start=4 * i), i)
        collector.on_test_epoch_end(trainer, None)
    collector.on_exception(trainer, None, RuntimeError("stop"))
    with pytest.warns(StoppedEarlyWarning, match="No space left"):
        preds = read_predictions(tmp_path)
    assert preds["y_pred"][:, 0].tolist() == [0.0] * 4 + [1.0] * 4
    assert len(preds["metadata"]) == 8


def test_foreign_folder_is_not_cleared(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    collector = WindowPredictionCollector(tmp_path)
    with pytest.raises(FileExistsError, match=r"thesis.tex.*refusing to clear it"):
        collector.on_test_epoch_start(FakeTrainer(), None)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_second_epoch_replaces_the_first(tmp_path: Path) -> None:
    collector = WindowPredictionCollector(tmp_path)
    run_epoch(collector, [((torch.ones(5), torch.ones(5)), make_batch(5))])
    run_epoch(collector, [((torch.zeros(2), torch.zeros(2)), make_batch(2))])
    assert read_predictions(tmp_path)["y_pred"].tolist() == [0.0, 0.0]
    assert sorted(os.listdir(tmp_path)) == [
        "manifest.json",
        "metadata.parquet",
        "y_pred.npy",
        "y_true.npy",
    ]


def test_interrupted_epoch_is_published_as_stopped(tmp_path: Path) -> None:
    collector = WindowPredictionCollector(tmp_path)
    run_epoch(collector, [((torch.ones(3), torch.ones(3)), make_batch(3))], end=False)
    collector.on_exception(FakeTrainer(), None, KeyboardInterrupt())
    with pytest.warns(StoppedEarlyWarning, match="KeyboardInterrupt"):
        assert len(read_predictions(tmp_path)["y_pred"]) == 3
    assert collector.last_manifest is not None
    assert collector.last_manifest["status"] == "stopped"


def test_capacity_comes_from_the_number_of_test_batches(
    tmp_path: Path, reservations: list[int]
) -> None:
    collector = WindowPredictionCollector(tmp_path)
    trainer = FakeTrainer(num_test_batches=[10, 5])
    run_epoch(collector, [((torch.ones(8, 2), torch.ones(8)), make_batch(8))], trainer=trainer)
    assert reservations == [120, 120]


def open_files() -> set[str]:
    fd_dir = Path("/proc/self/fd")
    names = set()
    for fd in fd_dir.iterdir():
        try:
            names.add(os.readlink(fd))
        except OSError:
            continue
    return names


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
@pytest.mark.parametrize("stop", ["end", "exception"])
def test_no_file_handles_or_threads_leak(tmp_path: Path, stop: str) -> None:
    import threading

    collector = WindowPredictionCollector(tmp_path)
    trainer = FakeTrainer(num_test_batches=[3])
    run_epoch(collector, [((torch.ones(4, 2), torch.ones(4)), make_batch(4))] * 3, end=False)
    if stop == "end":
        collector.on_test_epoch_end(trainer, None)
    else:
        collector.on_exception(trainer, None, KeyboardInterrupt())
    assert not [f for f in open_files() if f.startswith(str(tmp_path))]
    assert "nbstream-writer" not in {t.name for t in threading.enumerate()}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_outputs_round_trip_through_pinned_staging(tmp_path: Path) -> None:
    outputs = [
        (torch.randn(16, 30, device="cuda").bfloat16(), torch.arange(16, device="cuda") + i)
        for i in range(40)
    ]
    collector = WindowPredictionCollector(tmp_path)
    run_epoch(collector, [(o, make_batch(16, start=16 * i)) for i, o in enumerate(outputs)])
    preds = read_predictions(tmp_path)
    want = torch.cat([o[0] for o in outputs]).cpu()
    assert np.asarray(preds["y_pred"]).view(np.uint16).tobytes() == (
        want.view(torch.uint16).numpy().tobytes()
    )
    np.testing.assert_array_equal(preds["y_true"], torch.cat([o[1] for o in outputs]).cpu())


def test_a_summary_is_logged_at_the_end(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="nbstream.collector")
    run_epoch(
        WindowPredictionCollector(tmp_path), [((torch.ones(6, 2), torch.ones(6)), make_batch(6))]
    )
    assert "nbstream: 6 windows" in caplog.text
    assert "y_pred float32 (6, 2)" in caplog.text
