"""``convert_legacy``: a default-collector folder rewritten in nbstream's layout.

The reference is the default collector itself (``bench.baseline``): every converted folder
must read back, through ``read_predictions``, as the default reader reads the source.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from exca.cachedict import CacheDict

from bench.baseline import DefaultCollector, read_default
from nbstream import (
    CorruptPredictionsError,
    IncompletePredictionsError,
    PredictionsNotFoundError,
    UnsupportedEntryError,
    kernels,
    read_predictions,
)
from nbstream import _numba_config as cfg
from nbstream.convert import convert_legacy, default_destination
from nbstream.demo import Regressor, loader
from nbstream.store import PredictionStore
from nbstream.testing import FakeTrainer, make_batch


def _write_legacy(
    folder: Path,
    sizes: tp.Sequence[int],
    *,
    pred: tuple[torch.dtype, tuple[int, ...]] = (torch.float32, (5,)),
    true: tuple[torch.dtype, tuple[int, ...]] = (torch.int64, ()),
    subject_ids: tp.Callable[[int, int], tp.Any] | None = lambda start, n: torch.arange(n) % 3,
    end_epoch: bool = True,
    seed: int = 0,
) -> Path:
    """Drive ``DefaultCollector`` over batches of ``sizes`` windows, as the test loop does."""
    generator = torch.Generator().manual_seed(seed)
    collector = DefaultCollector(folder)
    trainer = FakeTrainer(num_test_batches=[len(sizes)])
    collector.on_test_epoch_start(trainer, None)
    start = 0
    for i, n in enumerate(sizes):
        subjects = None if subject_ids is None else subject_ids(start, n)
        batch = make_batch(n, start=start, subject_ids=subjects)
        outputs = tuple(_tensor((n, *shape), dtype, generator) for dtype, shape in (pred, true))
        collector.on_test_batch_end(trainer, None, outputs, batch, i, i % 2)
        start += n
    if end_epoch:
        collector.on_test_epoch_end(trainer, None)
    else:
        collector.on_exception(trainer, None, RuntimeError("stopped"))
    return folder


def _tensor(shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    if dtype.is_floating_point:
        values = torch.randn(shape, generator=generator).mul_(100).to(dtype)
        flat = values.view(-1)
        flat[: min(3, flat.numel())] = torch.tensor([float("nan"), float("inf"), -0.0])[
            : min(3, flat.numel())
        ].to(dtype)
        return values
    return torch.randint(-(2**40), 2**40, shape, generator=generator).to(dtype)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime: what "untouched" means."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def _assert_same(converted: Path, source: Path) -> None:
    got, ref = read_predictions(converted), read_default(source)
    assert list(got) == ["metadata", "y_true", "y_pred"]
    pd.testing.assert_frame_equal(got["metadata"], ref["metadata"])
    for name in ("y_pred", "y_true"):
        assert isinstance(got[name], np.memmap) or got[name].size == 0
        assert got[name].dtype == ref[name].dtype, name
        assert got[name].shape == ref[name].shape, name
        assert got[name].tobytes() == ref[name].tobytes(), name  # bit-identical, NaN included


@pytest.mark.parametrize(
    ("pred", "true"),
    [
        ((torch.float32, (5,)), (torch.int64, ())),
        ((torch.float16, (3, 4)), (torch.float16, (3, 4))),
        ((torch.int64, (2,)), (torch.float32, (7,))),
        ((torch.float64, ()), (torch.int32, (1,))),
    ],
    ids=["f32-i64", "f16-f16", "i64-f32", "f64-i32"],
)
def test_matches_default_reader(
    tmp_path: Path,
    pred: tuple[torch.dtype, tuple[int, ...]],
    true: tuple[torch.dtype, tuple[int, ...]],
) -> None:
    src = _write_legacy(tmp_path / "preds", [4, 7, 1, 12, 3], pred=pred, true=true)
    before = _snapshot(src)
    dst = convert_legacy(src, progress=False)
    assert _snapshot(src) == before  # (the default reader, below, writes .exca-last-use)
    assert dst == tmp_path / "preds-nbstream"
    _assert_same(dst, src)
    assert sorted(p.name for p in dst.iterdir()) == [
        "manifest.json",
        "metadata.parquet",
        "y_pred.npy",
        "y_true.npy",
    ]


def test_metadata_as_the_default_reader_types_it(tmp_path: Path) -> None:
    """CSV typing is kept as the default reader gives it ("007" comes back as it reads it)."""
    src = _write_legacy(
        tmp_path / "preds",
        [3, 2],
        subject_ids=lambda start, n: [f"{start + i:03d}" for i in range(n)],
    )
    dst = convert_legacy(src, tmp_path / "out", progress=False)
    _assert_same(dst, src)


def test_no_subject_column_and_zero_windows(tmp_path: Path) -> None:
    src = _write_legacy(tmp_path / "a", [2, 2], subject_ids=None)
    _assert_same(convert_legacy(src, progress=False), src)
    empty = _write_legacy(tmp_path / "empty", [])
    got = read_predictions(convert_legacy(empty, progress=False))
    ref = read_default(empty)
    assert got["y_pred"].shape == ref["y_pred"].shape == (0,)
    # an empty CSV index reads back untyped; the columns and their dtypes are the same
    pd.testing.assert_frame_equal(got["metadata"], ref["metadata"], check_index_type=False)


def test_real_trainer(tmp_path: Path, trainer_factory: tp.Callable[..., tp.Any]) -> None:
    src = tmp_path / "preds"
    trainer = trainer_factory(callbacks=[DefaultCollector(src)])
    trainer.test(Regressor(n_outputs=9), dataloaders=loader(37, 8, n_outputs=9), verbose=False)
    _assert_same(convert_legacy(src, progress=False), src)


def test_numpy_array_chunks(tmp_path: Path) -> None:
    """Chunks stored as one ``.npy`` per key (exca's NumpyArray) are read as memmaps too."""
    src = tmp_path / "preds"
    chunks = CacheDict[tp.Any](src, keep_in_ram=False, cache_type="NumpyArray")
    with chunks.write():
        for i, n in enumerate([3, 5]):
            chunks[f"y_pred_{i:08d}"] = np.arange(n * 2, dtype=np.float16).reshape(n, 2) + i
            chunks[f"y_true_{i:08d}"] = np.asfortranarray(np.ones((n, 3), np.int32) * i)
    table = CacheDict[tp.Any](src, keep_in_ram=False)
    with table.write():
        table["metadata"] = pd.DataFrame({"timeline": ["r"] * 8, "batch_idx": [0] * 3 + [1] * 5})
    _assert_same(convert_legacy(src, progress=False), src)


def test_default_destination_is_a_sibling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_destination(tmp_path / "a" / "preds") == tmp_path / "a" / "preds-nbstream"
    monkeypatch.chdir(tmp_path / ".")
    assert default_destination(".") == tmp_path.with_name(tmp_path.name + "-nbstream")
    assert default_destination("x/..") == tmp_path.with_name(tmp_path.name + "-nbstream")


def test_manifest_has_the_store_layout(tmp_path: Path) -> None:
    src = _write_legacy(tmp_path / "preds", [4, 2])
    dst = convert_legacy(src, progress=False)
    store = PredictionStore(tmp_path / "store", fsync=False)
    store.append("y_pred", torch.zeros(6, 5))
    store.append("y_true", torch.zeros(6, dtype=torch.int64))
    reference = store.finalize(read_default(src)["metadata"])
    manifest = json.loads((dst / "manifest.json").read_bytes())
    assert manifest.keys() == reference.keys()
    assert manifest["arrays"].keys() == reference["arrays"].keys()
    for name in ("y_pred", "y_true"):
        assert manifest["arrays"][name].keys() == reference["arrays"][name].keys()
        assert manifest["arrays"][name]["dtype"] == reference["arrays"][name]["dtype"]
    del manifest["arrays"], reference["arrays"]
    assert manifest == reference


# -- refusals ------------------------------------------------------------------------------
@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: tp.Any, **kwargs: tp.Any) -> tp.NoReturn:
        raise AssertionError("convert_legacy unpickled something")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)


@pytest.mark.usefixtures("no_unpickling")
def test_pickle_entry_refused_never_loaded(tmp_path: Path) -> None:
    src = _write_legacy(tmp_path / "preds", [2, 2])
    extra = CacheDict[tp.Any](src, keep_in_ram=False, cache_type="Pickle")
    with extra.write():
        extra["y_pred_00000002"] = np.zeros((2, 5), np.float32)
    before = _snapshot(src)
    with pytest.raises(UnsupportedEntryError, match=r"'Pickle'.*never unpickles"):
        convert_legacy(src, progress=False)
    assert not (tmp_path / "preds-nbstream").exists()
    assert not (tmp_path / "preds-nbstream.partial").exists()
    assert _snapshot(src) == before


@pytest.mark.usefixtures("no_unpickling")
def test_object_npy_refused_never_loaded(tmp_path: Path) -> None:
    src = _write_legacy(tmp_path / "preds", [2])
    (src / "data").mkdir(exist_ok=True)
    np.save(src / "data" / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with (src / "extra-info.jsonl").open("w") as f:  # exca's line for a NumpyArray entry
        f.write(json.dumps({"filename": "data/obj.npy", "#type": "NumpyArray", "#key": "y_true_9"}))
    with pytest.raises(UnsupportedEntryError, match="object dtype"):
        convert_legacy(src, progress=False)
    assert not (tmp_path / "preds-nbstream").exists()


def test_not_a_legacy_folder(tmp_path: Path) -> None:
    with pytest.raises(PredictionsNotFoundError, match="does not exist"):
        convert_legacy(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictionsNotFoundError, match=r"no default-collector.*it is empty"):
        convert_legacy(tmp_path / "empty")
    src = _write_legacy(tmp_path / "preds", [2])
    done = convert_legacy(src, progress=False)
    with pytest.raises(PredictionsNotFoundError, match="already in nbstream's layout"):
        convert_legacy(done, tmp_path / "again")
    stopped = _write_legacy(tmp_path / "stopped", [2, 3], end_epoch=False)
    with pytest.raises(IncompletePredictionsError, match="interrupted"):
        convert_legacy(stopped)
    assert not (tmp_path / "stopped-nbstream").exists()


def test_existing_destination(tmp_path: Path) -> None:
    src = _write_legacy(tmp_path / "preds", [2, 3])
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder; pass another destination"):
        convert_legacy(src, taken)
    assert (taken / "notes.txt").read_text() == "mine"
    with pytest.raises(FileExistsError, match="is the source folder"):
        convert_legacy(src, src)
    with pytest.raises(ValueError, match="inside the source"):
        convert_legacy(src, src / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_same(convert_legacy(src, empty, progress=False), src)


def test_rows_disagreeing_with_metadata(tmp_path: Path) -> None:
    src = _write_legacy(tmp_path / "preds", [2, 3])
    (info,) = src.glob("*-info.jsonl")
    lines = info.read_text().splitlines()
    info.write_text("\n".join(x for x in lines if '"y_true_00000001"' not in x) + "\n")
    with pytest.raises(CorruptPredictionsError, match="y_true hold 2 rows but the metadata has 5"):
        convert_legacy(src, progress=False)
    assert not (tmp_path / "preds-nbstream").exists()


# -- publishing ----------------------------------------------------------------------------
def test_failure_leaves_nothing_visible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _write_legacy(tmp_path / "preds", [4] * 10)
    before = _snapshot(src)
    monkeypatch.setattr(cfg, "STREAM_BLOCK_BYTES", 100)
    calls = []
    real = kernels.concatenate

    def failing(parts: tp.Any, out: tp.Any = None) -> tp.Any:
        calls.append(len(parts))
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(parts, out=out)

    monkeypatch.setattr(kernels, "concatenate", failing)
    with pytest.raises(OSError, match="No space left"):
        convert_legacy(src, progress=False)
    assert len(calls) == 3
    assert not (tmp_path / "preds-nbstream").exists()
    assert not (tmp_path / "preds-nbstream.partial").exists()
    assert _snapshot(src) == before


def test_leftover_partial_folder_is_replaced(tmp_path: Path) -> None:
    """A conversion killed mid-way leaves ``<DST>.partial``; the next one starts over."""
    src = _write_legacy(tmp_path / "preds", [3, 3])
    partial = tmp_path / "preds-nbstream.partial"
    partial.mkdir()
    (partial / "y_pred.npy").write_bytes(b"half")
    with pytest.raises(IncompletePredictionsError):
        read_predictions(partial)
    _assert_same(convert_legacy(src, progress=False), src)
    assert not partial.exists()


def test_copies_chunk_by_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups of about one block go to the kernel; nothing ever stacks the whole array."""
    src = _write_legacy(tmp_path / "preds", [8] * 30, pred=(torch.float32, (16,)))
    ref = read_default(src)
    block = 3 * 8 * 16 * 4  # three y_pred chunks
    monkeypatch.setattr(cfg, "STREAM_BLOCK_BYTES", block)
    groups: list[int] = []
    real, real_np = kernels.concatenate, np.concatenate

    def recording(parts: tp.Any, out: tp.Any = None) -> tp.Any:
        groups.append(sum(p.nbytes for p in parts))
        assert all(isinstance(p, np.memmap) for p in parts)  # views of the source, not copies
        return real(parts, out=out)

    def whole(arrays: tp.Any, *args: tp.Any, **kwargs: tp.Any) -> tp.Any:
        if any(isinstance(a, np.memmap) for a in arrays):
            raise AssertionError("np.concatenate called on chunks: they were stacked in RAM")
        return real_np(arrays, *args, **kwargs)

    monkeypatch.setattr(kernels, "concatenate", recording)
    monkeypatch.setattr(np, "concatenate", whole)
    dst = convert_legacy(src, progress=False)
    # y_pred: 30 chunks of 512 B, three per block; y_true: 64 B chunks, 24 then 6
    assert len(groups) == 10 + 2
    assert max(groups) <= block + 8 * 16 * 4
    monkeypatch.undo()
    got = read_predictions(dst)
    assert got["y_pred"].tobytes() == ref["y_pred"].tobytes()
    assert got["y_true"].tobytes() == ref["y_true"].tobytes()


def test_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write_legacy(tmp_path / "preds", [2, 3])
    convert_legacy(src, tmp_path / "quiet", progress=False)
    convert_legacy(src, tmp_path / "auto")  # stderr is not a terminal under pytest
    assert capsys.readouterr().err == ""
    convert_legacy(src, tmp_path / "shown", progress=True)
    assert "converting preds" in capsys.readouterr().err


# -- memory ---------------------------------------------------------------------------------
_RSS_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from nbstream import kernels
    from nbstream.convert import convert_legacy

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    # compile (or load) the copy kernel first: its code is not what this test measures
    parts = [np.ones((64, 1 << 14), np.float32)] * 2
    kernels.concatenate(parts, out=np.empty((128, 1 << 14), np.float32))
    del parts
    import pandas, pyarrow.parquet  # their code (~70 MiB) is not what this test measures
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    before = status("VmRSS")
    {call}
    print(status("VmHWM") - before)
    """
)


def _peak_rss_growth(call: str, src: Path, dst: Path) -> int:
    """Peak RSS growth, in bytes, of ``call`` in a fresh process (Linux /proc)."""
    script = _RSS_SCRIPT.replace("{call}", call)
    done = subprocess.run(
        [sys.executable, "-c", script, str(src), str(dst)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.slow
def test_peak_rss_stays_bounded(tmp_path: Path) -> None:
    """~400 MB of chunks convert with well under 256 MiB of RSS growth."""
    src = tmp_path / "preds"
    collector = DefaultCollector(src)
    trainer = FakeTrainer(num_test_batches=[200])
    collector.on_test_epoch_start(trainer, None)
    y_pred = torch.randn(32, 8_000)  # 2 x 1 MB per batch, 200 batches
    y_true = torch.randn(32, 8_000)
    for i in range(200):
        batch = make_batch(32, start=32 * i)
        collector.on_test_batch_end(trainer, None, (y_pred + i, y_true - i), batch, i, 0)
    collector.on_test_epoch_end(trainer, None)
    size = sum(p.stat().st_size for p in src.rglob("*"))
    assert size > 380e6
    growth = _peak_rss_growth(
        "convert_legacy(sys.argv[1], sys.argv[2], progress=False)", src, tmp_path / "out"
    )
    print(f"conversion of {size / 1e6:.0f} MB: peak RSS grew by {growth / 2**20:.0f} MiB")
    assert growth < 256 << 20, f"peak RSS grew by {growth / 2**20:.0f} MiB"
    got = read_predictions(tmp_path / "out")
    assert got["y_pred"].shape == (6400, 8_000)
    np.testing.assert_array_equal(got["y_pred"][-32:], (y_pred + 199).numpy())
    np.testing.assert_array_equal(got["y_true"][:32], y_true.numpy())
    # the measurement sees a reader that stacks everything in RAM, as the default one does
    stacked = _peak_rss_growth(
        "from bench.baseline import read_default; read_default(sys.argv[1])", src, tmp_path
    )
    assert stacked > size * 0.9
