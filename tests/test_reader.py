"""Tests of nbstream.reader: both layouts back as arrays and a table, and every refusal."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import ml_dtypes
import numpy as np
import pandas as pd
import pytest
import torch
from exca.cachedict import CacheDict

import nbstream
from nbstream.errors import (
    CorruptPredictionsError,
    IncompletePredictionsError,
    PredictionsNotFoundError,
    UnsupportedEntryError,
)
from nbstream.reader import read_predictions
from nbstream.store import MANIFEST_NAME, PredictionStore


def _metadata(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timeline": [f"rec-{i // 3}" for i in range(n)],
            "batch_idx": np.arange(n, dtype=np.int64) // 2,
            "dataloader_idx": np.zeros(n, dtype=np.int64),
            "subject_id": np.arange(n, dtype=np.int64) % 4,
            "group": [f"{i % 5:03d}" for i in range(n)],
        }
    )


def _write(
    folder: Path,
    y_pred: torch.Tensor,
    y_true: torch.Tensor,
    *,
    batch: int = 3,
    metadata: pd.DataFrame | None = None,
    status: str = "finished",
    error: str | None = None,
) -> pd.DataFrame:
    store = PredictionStore(folder, fsync=False)
    store.capacity_hint = 2
    for start in range(0, len(y_pred), batch):
        store.append("y_pred", y_pred[start : start + batch])
        store.append("y_true", y_true[start : start + batch])
    if len(y_pred) == 0:
        store.append("y_pred", y_pred)
        store.append("y_true", y_true)
    meta = _metadata(len(y_pred)) if metadata is None else metadata
    store.finalize(meta, status=status, error=error)
    return meta


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A finished nbstream folder of 10 windows."""
    folder = tmp_path / "preds"
    y_pred = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    y_true = torch.arange(10, dtype=torch.int64) % 4
    _write(folder, y_pred, y_true)
    return folder


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST_NAME).read_text())


def _rewrite_manifest(folder: Path, **changes) -> None:
    manifest = _manifest(folder)
    manifest.update(changes)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))


# -- nbstream layout -------------------------------------------------------------------------
def test_read_memmaps(tmp_path: Path) -> None:
    y_pred = torch.randn(11, 3, 2, generator=torch.Generator().manual_seed(1))
    y_true = torch.randint(0, 9, (11,), dtype=torch.int64)
    meta = _write(tmp_path, y_pred, y_true)
    out = read_predictions(tmp_path)
    assert list(out) == ["metadata", "y_true", "y_pred"]
    for name, expected in (("y_pred", y_pred), ("y_true", y_true)):
        array = out[name]
        assert isinstance(array, np.memmap)
        assert not array.flags.writeable
        assert array.dtype == expected.numpy().dtype
        np.testing.assert_array_equal(array, expected.numpy())
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0
    pd.testing.assert_frame_equal(out["metadata"], meta)


def test_read_accepts_str_path(folder: Path) -> None:
    out = read_predictions(str(folder))
    assert out["y_pred"].shape == (10, 4)


def test_read_in_ram(tmp_path: Path) -> None:
    y_pred = torch.randn(7, 5, generator=torch.Generator().manual_seed(2)).double()
    y_true = torch.randint(0, 2, (7, 5)).bool()
    _write(tmp_path, y_pred, y_true)
    out = read_predictions(tmp_path, mmap=False)
    for name, expected in (("y_pred", y_pred), ("y_true", y_true)):
        array = out[name]
        assert type(array) is np.ndarray
        assert array.flags.writeable
        np.testing.assert_array_equal(array, expected.numpy())


@pytest.mark.parametrize("mmap", [True, False])
def test_bfloat16_bit_exact(tmp_path: Path, mmap: bool) -> None:
    y_pred = torch.randn(9, 6, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    y_pred[0, :3] = torch.tensor([float("nan"), float("inf"), -0.0], dtype=torch.bfloat16)
    y_true = torch.randn(9, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    _write(tmp_path, y_pred, y_true)
    out = read_predictions(tmp_path, mmap=mmap)
    for name, expected in (("y_pred", y_pred), ("y_true", y_true)):
        array = out[name]
        assert array.dtype == np.dtype(ml_dtypes.bfloat16)
        assert array.shape == tuple(expected.shape)
        assert isinstance(array, np.memmap) == mmap
        got = np.ascontiguousarray(array).view(np.uint16)
        assert got.tobytes() == expected.view(torch.int16).numpy().tobytes()
    # the values themselves, through ml_dtypes
    np.testing.assert_array_equal(
        out["y_true"].astype(np.float32), y_true.float().numpy(), strict=True
    )


def test_metadata_dtypes_round_trip(tmp_path: Path) -> None:
    meta = pd.DataFrame(
        {
            "timeline": ["rec-0", "rec-0", "rec-1"],
            "batch_idx": np.array([0, 0, 1], dtype=np.int64),
            "dataloader_idx": np.array([0, 0, 0], dtype=np.int64),
            "subject_id": np.array([7, 7, 12], dtype=np.int64),
            "group": ["007", "010", "7"],
        }
    )
    _write(tmp_path, torch.zeros(3, 2), torch.zeros(3), metadata=meta)
    got = read_predictions(tmp_path)["metadata"]
    pd.testing.assert_frame_equal(got, meta)
    assert got["group"].tolist() == ["007", "010", "7"]
    assert got["batch_idx"].dtype == np.int64
    assert got["subject_id"].dtype == np.int64


@pytest.mark.parametrize(
    "column",
    [
        ["a", None, "c"],
        [1.5, float("nan"), 3.0],
        [True, False, True],
        [1, 2, 3],
        ["x", "y", "z"],
        pd.Categorical(["a", "b", "a"]),
        [b"raw", b"bytes", b"!"],
    ],
    ids=["str-with-none", "float-nan", "bool", "int", "str", "categorical", "bytes"],
)
def test_metadata_reads_as_pandas_reads_it(tmp_path: Path, column) -> None:
    """The fast Parquet path gives what pd.read_parquet gives, for every column type."""
    meta = _metadata(3).assign(extra=column)
    _write(tmp_path, torch.zeros(3, 2), torch.zeros(3), metadata=meta)
    got = read_predictions(tmp_path)["metadata"]
    pd.testing.assert_frame_equal(got, pd.read_parquet(tmp_path / "metadata.parquet"))


def test_metadata_falls_back_to_pandas_when_dtypes_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the fast path maps a type otherwise than the manifest says, pandas reads it."""
    meta = _metadata(3)
    _write(tmp_path, torch.zeros(3, 2), torch.zeros(3), metadata=meta)
    monkeypatch.setattr(
        nbstream.reader, "_fast_read_parquet", lambda path: meta.astype({"batch_idx": "int32"})
    )
    pd.testing.assert_frame_equal(read_predictions(tmp_path)["metadata"], meta)


def test_zero_window_folder(tmp_path: Path) -> None:
    meta = _metadata(0)
    _write(tmp_path, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), metadata=meta)
    for mmap in (True, False):
        out = read_predictions(tmp_path, mmap=mmap)
        assert out["y_pred"].shape == (0, 4)
        assert out["y_pred"].dtype == np.float32
        assert out["y_true"].shape == (0,)
        assert out["y_true"].dtype == np.int64
        assert len(out["metadata"]) == 0
        assert list(out["metadata"].columns) == list(meta.columns)


def test_no_batch_folder_reads_as_empty(tmp_path: Path) -> None:
    """A run whose test loop saved no batch at all (empty test set, or stopped in the first
    batch) publishes a store that never received an array; reading it must not call the
    folder corrupt (the legacy reader returns empty arrays in the same situation)."""
    store = PredictionStore(tmp_path, fsync=False)
    store.finalize(_metadata(0))
    out = read_predictions(tmp_path)
    assert len(out["y_pred"]) == 0
    assert len(out["y_true"]) == 0
    assert len(out["metadata"]) == 0


def test_stopped_run_warns_and_returns_data(folder: Path) -> None:
    _rewrite_manifest(folder, status="stopped", error="KeyboardInterrupt: stop")
    with pytest.warns(nbstream.StoppedEarlyWarning, match=r"stop early \(KeyboardInterrupt"):
        out = read_predictions(folder)
    assert out["y_pred"].shape == (10, 4)
    assert len(out["metadata"]) == 10


def test_stopped_warning_points_at_caller(tmp_path: Path) -> None:
    y = torch.zeros(2)
    _write(tmp_path, y, y, status="stopped", error="boom")
    with pytest.warns(nbstream.StoppedEarlyWarning, match="hold the 2 windows") as record:
        read_predictions(tmp_path)
    assert record[0].filename == __file__


# -- refusals ------------------------------------------------------------------------------
def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(PredictionsNotFoundError, match=r"missing does not exist; run the test"):
        read_predictions(tmp_path / "missing")


def test_file_path(tmp_path: Path) -> None:
    path = tmp_path / "preds.npy"
    path.write_bytes(b"")
    with pytest.raises(PredictionsNotFoundError, match=r"preds.npy is not a folder"):
        read_predictions(path)


def test_not_found_is_a_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_predictions(tmp_path / "missing")


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(PredictionsNotFoundError, match="is empty: no predictions were saved"):
        read_predictions(tmp_path)


def test_unrelated_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PredictionsNotFoundError, match=r"holds no predictions \(found notes.txt"):
        read_predictions(tmp_path)


def test_partial_files_without_manifest(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path, fsync=False)
    store.append("y_pred", torch.ones(3, 2))
    store.append("y_true", torch.ones(3))
    store.discard()
    with pytest.raises(IncompletePredictionsError, match=r"interrupted run.*y_pred.npy.partial"):
        read_predictions(tmp_path)


def test_published_arrays_without_manifest(folder: Path) -> None:
    (folder / MANIFEST_NAME).unlink()
    with pytest.raises(IncompletePredictionsError, match=r"no complete manifest\.json"):
        read_predictions(folder)


@pytest.mark.parametrize("complete", [False, None, "true", 1])
def test_manifest_not_complete(folder: Path, complete) -> None:
    _rewrite_manifest(folder, complete=complete)
    with pytest.raises(IncompletePredictionsError, match="does not mark the predictions complete"):
        read_predictions(folder)


def test_invalid_json(folder: Path) -> None:
    text = (folder / MANIFEST_NAME).read_text()
    (folder / MANIFEST_NAME).write_text(text[: len(text) // 2])
    with pytest.raises(CorruptPredictionsError, match="is not valid JSON"):
        read_predictions(folder)


def test_manifest_not_a_dict(folder: Path) -> None:
    (folder / MANIFEST_NAME).write_text("[1, 2]")
    with pytest.raises(CorruptPredictionsError, match="is not an nbstream manifest"):
        read_predictions(folder)


def test_wrong_format(folder: Path) -> None:
    _rewrite_manifest(folder, format="something.else")
    with pytest.raises(CorruptPredictionsError, match="is not an nbstream manifest"):
        read_predictions(folder)


@pytest.mark.parametrize("version", [2, 99, "1", None])
def test_unreadable_format_version(folder: Path, version) -> None:
    _rewrite_manifest(folder, format_version=version)
    with pytest.raises(CorruptPredictionsError, match=r"format_version .*reads up to 1"):
        read_predictions(folder)


@pytest.mark.parametrize(("key", "value"), [("n_windows", -1), ("n_windows", "10"), ("arrays", [])])
def test_invalid_counts(folder: Path, key: str, value) -> None:
    _rewrite_manifest(folder, **{key: value})
    with pytest.raises(CorruptPredictionsError, match="lacks a valid n_windows or arrays entry"):
        read_predictions(folder)


def test_manifest_lacks_an_array(folder: Path) -> None:
    manifest = _manifest(folder)
    del manifest["arrays"]["y_true"]
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CorruptPredictionsError, match="lists no array 'y_true'"):
        read_predictions(folder)


def test_truncated_array(folder: Path) -> None:
    path = folder / "y_pred.npy"
    size = path.stat().st_size
    os.truncate(path, size - 4)
    with pytest.raises(
        CorruptPredictionsError, match=rf"holds {size - 4} bytes .*needs {size}; .*truncated"
    ):
        read_predictions(folder)


def test_grown_array(folder: Path) -> None:
    path = folder / "y_true.npy"
    size = path.stat().st_size
    with path.open("ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(CorruptPredictionsError, match=rf"holds {size + 8} bytes .*needs {size}"):
        read_predictions(folder)


def test_missing_array_file(folder: Path) -> None:
    (folder / "y_true.npy").unlink()
    with pytest.raises(CorruptPredictionsError, match=r"y_true\.npy is missing"):
        read_predictions(folder)


def test_missing_metadata_file(folder: Path) -> None:
    (folder / "metadata.parquet").unlink()
    with pytest.raises(CorruptPredictionsError, match=r"metadata\.parquet is missing"):
        read_predictions(folder)


def test_damaged_metadata_file(folder: Path) -> None:
    (folder / "metadata.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(CorruptPredictionsError, match="is not a readable Parquet file"):
        read_predictions(folder)


def test_metadata_disagrees_with_manifest(folder: Path) -> None:
    _metadata(9).to_parquet(folder / "metadata.parquet", index=False)
    with pytest.raises(CorruptPredictionsError, match=r"has 9 rows .*says 10 rows"):
        read_predictions(folder)


def test_shape_disagrees_with_window_count(folder: Path) -> None:
    manifest = _manifest(folder)
    manifest["arrays"]["y_pred"]["shape"] = [9, 4]
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CorruptPredictionsError, match=r"shape \(9, 4\) .*holds 10 windows"):
        read_predictions(folder)


def test_dtype_disagrees_with_file(folder: Path) -> None:
    manifest = _manifest(folder)
    manifest["arrays"]["y_pred"]["dtype"] = "int32"  # same item size: the byte count agrees
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CorruptPredictionsError, match=r"holds float32 .*manifest says int32"):
        read_predictions(folder)


def test_unknown_dtype(folder: Path) -> None:
    manifest = _manifest(folder)
    manifest["arrays"]["y_pred"]["dtype"] = "float128x"
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CorruptPredictionsError, match="unknown dtype 'float128x'"):
        read_predictions(folder)


def test_object_npy_is_refused(folder: Path) -> None:
    """An object array in place of the data is refused, never unpickled."""
    path = folder / "y_pred.npy"
    size = path.stat().st_size
    manifest = _manifest(folder)
    header = manifest["arrays"]["y_pred"]["header_bytes"]
    # Build a same-sized file whose header declares an object array.
    text = repr({"descr": "|O", "fortran_order": False, "shape": (10, 4)}).encode()
    body = text + b" " * (header - 10 - len(text) - 1) + b"\n"
    raw = b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body
    path.write_bytes(raw + b"\0" * (size - len(raw)))
    with pytest.raises(CorruptPredictionsError, match=r"is not a readable \.npy file"):
        read_predictions(folder)


@pytest.mark.parametrize(
    "name", ["../y_pred.npy", "/etc/passwd", "sub/y_pred.npy", "..", ".", "", None, 3]
)
def test_manifest_file_outside_folder(folder: Path, name) -> None:
    manifest = _manifest(folder)
    manifest["arrays"]["y_pred"]["file"] = name
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    message = "not a plain file name inside the folder|needs file, dtype"
    with pytest.raises(CorruptPredictionsError, match=message):
        read_predictions(folder)


def test_manifest_metadata_file_outside_folder(folder: Path) -> None:
    manifest = _manifest(folder)
    manifest["metadata"]["file"] = "../metadata.parquet"
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CorruptPredictionsError, match="refusing to read outside it"):
        read_predictions(folder)


def test_symlink_outside_folder(folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.npy"
    (folder / "y_pred.npy").rename(outside)
    (folder / "y_pred.npy").symlink_to(outside)
    with pytest.raises(CorruptPredictionsError, match="links outside"):
        read_predictions(folder)


def test_metadata_symlink_outside_folder(folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.parquet"
    (folder / "metadata.parquet").rename(outside)
    (folder / "metadata.parquet").symlink_to(outside)
    with pytest.raises(CorruptPredictionsError, match="links outside"):
        read_predictions(folder)


def test_symlinked_folder_is_fine(folder: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(folder, target_is_directory=True)
    assert read_predictions(link)["y_pred"].shape == (10, 4)


# -- the default collector's exca layout ----------------------------------------------------
def _legacy(folder: Path, n_batches: int = 4, *, with_metadata: bool = True):
    """A folder as the default collector writes it; returns the chunks by name."""
    gen = np.random.default_rng(0)
    chunks: dict[str, list[np.ndarray]] = {"y_pred": [], "y_true": []}
    for i in range(n_batches):
        n = 2 + i % 3
        chunks["y_pred"].append(gen.standard_normal((n, 3, 2)).astype(np.float32))
        chunks["y_true"].append(gen.integers(0, 9, n).astype(np.int64))
    cd: CacheDict = CacheDict(folder, keep_in_ram=False)
    with cd.write():
        for i in reversed(range(n_batches)):  # insertion order must not matter
            cd[f"y_pred_{i:08d}"] = chunks["y_pred"][i]
            cd[f"y_true_{i:08d}"] = chunks["y_true"][i]
        if with_metadata:
            n = sum(len(c) for c in chunks["y_pred"])
            cd["metadata"] = pd.DataFrame(
                {
                    "timeline": [f"rec-{k // 4}" for k in range(n)],
                    "batch_idx": np.arange(n) // 3,
                    "dataloader_idx": np.zeros(n, dtype=np.int64),
                    "subject_id": np.arange(n) % 2,
                    "group": [f"stim {k % 3}" for k in range(n)],
                }
            )
    return chunks


def _info_lines(folder: Path) -> tuple[Path, list[dict]]:
    (info_file,) = folder.glob("*-info.jsonl")
    return info_file, [json.loads(line) for line in info_file.read_text().splitlines()]


def _write_info_lines(info_file: Path, lines: list[dict]) -> None:
    info_file.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_legacy_layout(tmp_path: Path) -> None:
    chunks = _legacy(tmp_path)
    out = read_predictions(tmp_path)
    assert list(out) == ["metadata", "y_true", "y_pred"]
    for name in ("y_pred", "y_true"):
        expected = np.concatenate(chunks[name])
        assert out[name].dtype == expected.dtype
        np.testing.assert_array_equal(out[name], expected)
    pd.testing.assert_frame_equal(out["metadata"], CacheDict(tmp_path)["metadata"])


def test_legacy_layout_many_chunks_numeric_order(tmp_path: Path) -> None:
    chunks = _legacy(tmp_path, n_batches=12)
    out = read_predictions(tmp_path)
    np.testing.assert_array_equal(out["y_pred"], np.concatenate(chunks["y_pred"]))


def test_legacy_parquet_metadata_matches_exca(tmp_path: Path) -> None:
    """Metadata stored with exca's Parquet handler reads back as exca itself reads it."""
    _legacy(tmp_path, with_metadata=False)
    n = 2 + 3 + 4 + 2
    cd: CacheDict = CacheDict(tmp_path, cache_type="ParquetPandasDataFrame")
    with cd.write():
        cd["metadata"] = pd.DataFrame({"timeline": ["r"] * n, "group": ["007"] * n})
    out = read_predictions(tmp_path)
    assert out["metadata"]["group"].tolist() == ["007"] * n
    pd.testing.assert_frame_equal(out["metadata"], CacheDict(tmp_path)["metadata"])


def test_legacy_numpy_array_entries(tmp_path: Path) -> None:
    arrays = [np.arange(6, dtype=np.float64).reshape(3, 2), np.ones((1, 2))]
    cd: CacheDict = CacheDict(tmp_path, cache_type="NumpyArray")
    with cd.write():
        for i, array in enumerate(arrays):
            cd[f"y_pred_{i:08d}"] = array
            cd[f"y_true_{i:08d}"] = array[:, 0]
    cd = CacheDict(tmp_path)
    with cd.write():
        cd["metadata"] = pd.DataFrame({"timeline": ["a"] * 4})
    out = read_predictions(tmp_path)
    np.testing.assert_array_equal(out["y_pred"], np.concatenate(arrays))
    np.testing.assert_array_equal(out["y_true"], np.concatenate([a[:, 0] for a in arrays]))


def test_legacy_without_metadata(tmp_path: Path) -> None:
    _legacy(tmp_path, with_metadata=False)
    with pytest.raises(IncompletePredictionsError, match="no metadata entry: the run was"):
        read_predictions(tmp_path)


def test_legacy_pickle_entry_is_never_unpickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _legacy(tmp_path)
    cd: CacheDict = CacheDict(tmp_path, cache_type="Pickle")
    with cd.write():
        cd["y_pred_00000099"] = np.zeros((1, 3, 2), dtype=np.float32)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("read_predictions unpickled something")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "Unpickler", no_unpickling)
    with pytest.raises(UnsupportedEntryError, match=r"'y_pred_00000099' .*stored as 'Pickle'"):
        read_predictions(tmp_path)


def test_legacy_hand_written_pickle_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _legacy(tmp_path)
    payload = tmp_path / "data" / "evil.pkl"
    payload.write_bytes(pickle.dumps({"x": 1}))
    info_file, lines = _info_lines(tmp_path)
    lines.append({"filename": "data/evil.pkl", "#type": "Pickle", "#key": "metadata"})
    _write_info_lines(info_file, lines)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("read_predictions unpickled something")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    with pytest.raises(UnsupportedEntryError, match="never unpickles"):
        read_predictions(tmp_path)


def test_legacy_object_dtype_refused(tmp_path: Path) -> None:
    _legacy(tmp_path)
    info_file, lines = _info_lines(tmp_path)
    for line in lines:
        if line["#key"] == "y_true_00000000":
            line["dtype"] = "object"
    _write_info_lines(info_file, lines)
    with pytest.raises(UnsupportedEntryError, match="'y_true_00000000' has object dtype"):
        read_predictions(tmp_path)


@pytest.mark.parametrize("name", ["../outside.data", "/etc/passwd", "data/../../x.data"])
def test_legacy_filename_outside_folder(tmp_path: Path, name: str) -> None:
    _legacy(tmp_path)
    info_file, lines = _info_lines(tmp_path)
    for line in lines:
        if line["#key"] == "y_pred_00000001":
            line["filename"] = name
    _write_info_lines(info_file, lines)
    with pytest.raises(CorruptPredictionsError, match=r"'y_pred_00000001' names .*outside"):
        read_predictions(tmp_path)


def test_legacy_symlink_outside_folder(tmp_path: Path) -> None:
    folder = tmp_path / "preds"
    _legacy(folder)
    _, lines = _info_lines(folder)
    data_file = folder / lines[0]["filename"]
    outside = tmp_path / "outside.data"
    data_file.rename(outside)
    data_file.symlink_to(outside)
    with pytest.raises(CorruptPredictionsError, match="links outside"):
        read_predictions(folder)


def test_legacy_truncated_data_file(tmp_path: Path) -> None:
    _legacy(tmp_path)
    _, lines = _info_lines(tmp_path)
    data_file = tmp_path / lines[0]["filename"]
    size = data_file.stat().st_size
    os.truncate(data_file, size - 8)
    with pytest.raises(
        CorruptPredictionsError, match=rf"holds {size - 8} bytes but entry .*the file was truncated"
    ):
        read_predictions(tmp_path)


def test_legacy_truncated_numpy_entry(tmp_path: Path) -> None:
    cd: CacheDict = CacheDict(tmp_path, cache_type="NumpyArray")
    with cd.write():
        cd["y_pred_00000000"] = np.arange(60, dtype=np.float32).reshape(30, 2)
        cd["y_true_00000000"] = np.arange(30)
    cd = CacheDict(tmp_path)
    with cd.write():
        cd["metadata"] = pd.DataFrame({"timeline": ["a"] * 30})
    (path,) = (tmp_path / "data").glob("y_pred_00000000-*.npy")
    os.truncate(path, path.stat().st_size - 8)
    with pytest.raises(CorruptPredictionsError, match="y_pred_00000000"):
        read_predictions(tmp_path)


def test_legacy_deleted_and_broken_lines_are_skipped(tmp_path: Path) -> None:
    chunks = _legacy(tmp_path)
    info_file, lines = _info_lines(tmp_path)
    text = "".join(json.dumps(line) + "\n" for line in lines)
    blank = " " * 40 + "\n"
    info_file.write_text(blank + text + '{"filename": "data/x.da')  # a cut last line
    out = read_predictions(tmp_path)
    np.testing.assert_array_equal(out["y_true"], np.concatenate(chunks["y_true"]))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda m: m["arrays"].__setitem__("y_pred", "y_pred.npy"), id="entry-str"),
        pytest.param(lambda m: m["arrays"]["y_pred"].__setitem__("header_bytes", None), id="hdr"),
        pytest.param(lambda m: m["arrays"]["y_pred"].__setitem__("shape", [10, "x"]), id="shape"),
        pytest.param(lambda m: m.__setitem__("metadata", "metadata.parquet"), id="meta-str"),
    ],
)
def test_malformed_manifest_entry(folder: Path, change) -> None:
    """A manifest whose entries have the wrong types is corrupt, not a crash of the reader."""
    manifest = _manifest(folder)
    change(manifest)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CorruptPredictionsError):
        read_predictions(folder)
