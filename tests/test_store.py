"""Tests of nbstream.store: growable .npy memmaps, the manifest and the folder's life."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import nbstream.store as store_mod
from nbstream.store import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    GrowableNpy,
    PredictionStore,
    clear_folder,
    storage_dtype,
)

DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int8,
    torch.uint8,
    torch.bool,
]

# Per-window shapes of the tasks the store serves.
ROW_SHAPES = {
    "labels": (),  # (n,) integer labels
    "logits": (4,),  # class logits
    "regression": (5000,),  # regression vectors
    "embeddings": (3, 8),  # token embeddings
    "ctc": (6, 2, 5),  # (n, T, channels, vocab) log-probs
}


def _random(n: int, row_shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (n, *row_shape)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen, dtype=torch.float64) * 100).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=gen, dtype=torch.int64).to(dtype)


def _as_torch(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """The torch tensor a stored array holds (bfloat16 is stored as its '<u2' bits)."""
    array = np.ascontiguousarray(array)
    if dtype == torch.bfloat16:
        assert array.dtype == np.dtype("<u2")
        return torch.from_numpy(array.copy()).view(torch.bfloat16)
    return torch.from_numpy(array.copy())


def _bytes(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def _metadata(n: int) -> pd.DataFrame:
    return pd.DataFrame({"timeline": [f"rec-{i}" for i in range(n)], "batch_idx": np.arange(n)})


def _header_length(path: Path) -> int:
    with path.open("rb") as f:
        version = np.lib.format.read_magic(f)
        assert version == (1, 0)
        np.lib.format.read_array_header_1_0(f)
        return f.tell()


# -- round trips -------------------------------------------------------------------------
# The long regression rows are covered by two dtypes only, to stay fast.
ROUND_TRIPS = [
    pytest.param(task, dtype, id=f"{task}-{str(dtype).removeprefix('torch.')}")
    for task in ROW_SHAPES
    for dtype in DTYPES
    if task != "regression" or dtype in (torch.float32, torch.bfloat16)
]


@pytest.mark.parametrize(("task", "dtype"), ROUND_TRIPS)
def test_round_trip_bit_exact(tmp_path: Path, task: str, dtype: torch.dtype) -> None:
    row_shape = ROW_SHAPES[task]
    batches = [_random(n, row_shape, dtype, seed) for seed, n in enumerate([3, 1, 5, 2])]
    store = PredictionStore(tmp_path, fsync=False)
    store.capacity_hint = 2
    for batch in batches:
        store.append("y_pred", batch)
    expected = torch.cat(batches)
    store.finalize(_metadata(len(expected)))

    loaded = np.load(tmp_path / "y_pred.npy", mmap_mode="r")
    assert isinstance(loaded, np.memmap)
    assert loaded.shape == tuple(expected.shape)
    assert loaded.dtype == storage_dtype(dtype)[1]
    got = _as_torch(loaded, dtype)
    assert got.dtype == dtype
    assert _bytes(got) == _bytes(expected)


def test_readable_with_numpy_alone(tmp_path: Path) -> None:
    """A stored file is a plain .npy: a process importing only numpy reads it back."""
    y = _random(7, (3, 4), torch.float32, 0)
    reference = y.numpy().copy()
    np.save(tmp_path / "reference.npy", reference)
    store = PredictionStore(tmp_path / "preds", fsync=False)
    store.capacity_hint = 2
    store.append("y_pred", y[:4])
    store.append("y_pred", y[4:])
    store.finalize(_metadata(7))
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        got = np.load(sys.argv[1], mmap_mode="r")
        ref = np.load(sys.argv[2])
        assert type(got) is np.memmap, type(got)
        assert got.shape == ref.shape and got.dtype == ref.dtype, (got.shape, got.dtype)
        assert got.tobytes() == ref.tobytes()
        heavy = {"torch", "nbstream", "pandas"} & set(sys.modules)
        assert not heavy, heavy
        print("ok")
        """
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(tmp_path / "preds" / "y_pred.npy"),
            str(tmp_path / "reference.npy"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_nan_and_inf_bit_exact(tmp_path: Path, dtype: torch.dtype) -> None:
    values = torch.tensor(
        [[float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1.5]], dtype=torch.float64
    ).to(dtype)
    # A NaN with a payload and the sign bit set must survive too.
    if dtype == torch.float32:
        values[0, 5] = torch.tensor([0xFFC00001], dtype=torch.int64).to(torch.int32).view(dtype)[0]
    store = PredictionStore(tmp_path, fsync=False)
    store.append("y_pred", values)
    store.append("y_pred", values.flip(1))
    store.finalize(_metadata(2))
    loaded = np.load(tmp_path / "y_pred.npy", mmap_mode="r")
    expected = torch.cat([values, values.flip(1)])
    assert np.asarray(loaded).view(np.uint8).tobytes() == _bytes(expected)


# -- growth --------------------------------------------------------------------------------
def test_growth_keeps_rows_and_header(tmp_path: Path) -> None:
    row_shape = (5, 3)
    array = GrowableNpy(tmp_path / "y.npy", torch.float32, row_shape, capacity=3, fsync=False)
    header = array.header_bytes
    assert header % 64 == 0
    assert _header_length(array.partial_path) == header
    assert array.partial_path.stat().st_size == header + 3 * array.row_bytes
    assert not array.path.exists()
    batches = [_random(n, row_shape, torch.float32, n) for n in [1, 2, 4, 7, 1, 9, 3, 16]]
    capacities = []
    for batch in batches:
        array.append(batch)
        capacities.append(array.capacity)
    assert capacities == sorted(capacities)  # grows, never shrinks
    assert capacities[-1] > 3
    n_rows = sum(len(b) for b in batches)
    assert array.rows == n_rows
    info = array.close()
    assert info == {
        "file": "y.npy",
        "dtype": "float32",
        "shape": [n_rows, *row_shape],
        "header_bytes": header,
    }
    assert not array.partial_path.exists()
    assert array.path.stat().st_size == header + n_rows * array.row_bytes
    assert array.row_bytes == 5 * 3 * 4
    assert _header_length(array.path) == header
    loaded = np.load(array.path, mmap_mode="r")
    np.testing.assert_array_equal(loaded, torch.cat(batches).numpy())


def test_store_growth_from_small_hint(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path, fsync=False)
    store.capacity_hint = 3
    preds, trues = [], []
    for i in range(40):
        n = 1 + i % 4
        preds.append(_random(n, (4,), torch.float32, i))
        trues.append(torch.arange(n, dtype=torch.int64) + 10 * i)
        store.append("y_pred", preds[-1])
        store.append("y_true", trues[-1])
    assert store.arrays["y_pred"].capacity >= store.n_windows > 3
    n = store.n_windows
    assert n == sum(len(p) for p in preds)
    manifest = store.finalize(_metadata(n))
    for name, parts in (("y_pred", preds), ("y_true", trues)):
        path = tmp_path / f"{name}.npy"
        info = manifest["arrays"][name]
        row_bytes = int(np.prod(info["shape"][1:], dtype=np.int64)) * parts[0].element_size()
        assert path.stat().st_size == info["header_bytes"] + n * row_bytes
        assert info["header_bytes"] % 64 == 0
        np.testing.assert_array_equal(np.load(path, mmap_mode="r"), torch.cat(parts).numpy())


def test_batch_larger_than_capacity(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path, fsync=False)
    store.capacity_hint = 2
    big = _random(50, (3,), torch.float64, 1)
    store.append("y_pred", big)
    assert store.arrays["y_pred"].capacity >= 50
    store.append("y_pred", big[:1])
    store.finalize(_metadata(51))
    np.testing.assert_array_equal(np.load(tmp_path / "y_pred.npy"), torch.cat([big, big[:1]]))


def test_default_capacity_without_hint(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path, fsync=False)
    store.append("y_pred", torch.zeros(2, 1024, dtype=torch.float32))
    # a few MiB of rows preallocated: 4 MiB / 4 KiB
    assert store.arrays["y_pred"].capacity == 1024
    store.discard()


# -- odd sources ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda base: base.T, id="transposed"),
        pytest.param(lambda base: base[:, ::2], id="strided-columns"),
        pytest.param(lambda base: base[::3], id="strided-rows"),
        pytest.param(lambda base: base[:1].expand(6, -1), id="expanded"),
        pytest.param(lambda base: base.T[1:, 2:5], id="offset-view"),
    ],
)
def test_non_contiguous_source(tmp_path: Path, make) -> None:
    base = torch.arange(18 * 12, dtype=torch.float32).reshape(18, 12)
    rows = make(base)
    assert not rows.is_contiguous()
    store = PredictionStore(tmp_path, fsync=False)
    store.append("y_pred", rows)
    store.append("y_pred", rows)
    store.finalize(_metadata(2 * len(rows)))
    expected = torch.cat([rows.contiguous(), rows.contiguous()]).numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "y_pred.npy"), expected)


def test_zero_rows(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path, fsync=False)
    store.append("y_pred", torch.empty(0, 4, dtype=torch.float32))
    store.append("y_true", torch.empty(0, dtype=torch.int64))
    manifest = store.finalize(_metadata(0))
    assert manifest["n_windows"] == 0
    y_pred = np.load(tmp_path / "y_pred.npy")
    assert y_pred.shape == (0, 4) and y_pred.dtype == np.float32
    y_true = np.load(tmp_path / "y_true.npy")
    assert y_true.shape == (0,) and y_true.dtype == np.int64
    header = manifest["arrays"]["y_pred"]["header_bytes"]
    assert (tmp_path / "y_pred.npy").stat().st_size == header


def test_zero_rows_then_rows(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path, fsync=False)
    store.append("y_pred", torch.empty(0, 2, dtype=torch.int8))
    rows = torch.tensor([[1, -2], [3, -4]], dtype=torch.int8)
    store.append("y_pred", rows)
    store.finalize(_metadata(2))
    np.testing.assert_array_equal(np.load(tmp_path / "y_pred.npy"), rows.numpy())


def test_zero_size_rows(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path, fsync=False)
    store.capacity_hint = 1
    for _ in range(5):
        store.append("y_pred", torch.empty(3, 0, dtype=torch.float32))
    manifest = store.finalize(_metadata(15))
    assert manifest["arrays"]["y_pred"]["shape"] == [15, 0]
    loaded = np.load(tmp_path / "y_pred.npy")
    assert loaded.shape == (15, 0)
    assert (tmp_path / "y_pred.npy").stat().st_size == manifest["arrays"]["y_pred"]["header_bytes"]


def test_append_wrong_dtype_or_shape(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path, fsync=False)
    store.append("y_pred", torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"y_pred: got rows of dtype torch.float64 .*expected"):
        store.append("y_pred", torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(2, 5\).*expected dtype torch.float32"):
        store.append("y_pred", torch.zeros(2, 5))
    assert store.arrays["y_pred"].rows == 2
    store.discard()


# -- manifest, truncate, discard -------------------------------------------------------------
def test_manifest_content(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path, fsync=True)
    store.append("y_pred", torch.zeros(3, 2, 5, dtype=torch.bfloat16))
    store.append("y_true", torch.arange(3))
    meta = pd.DataFrame(
        {
            "timeline": ["a", "b", "c"],
            "batch_idx": np.array([0, 0, 1], dtype=np.int64),
            "group": ["007", "008", "x"],
        }
    )
    returned = store.finalize(meta)
    on_disk = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert returned == on_disk
    assert on_disk["format"] == FORMAT_NAME == "nbstream.test_predictions"
    assert on_disk["format_version"] == FORMAT_VERSION == 1
    assert on_disk["complete"] is True
    assert on_disk["status"] == "finished"
    assert on_disk["error"] is None
    assert on_disk["n_windows"] == 3
    assert on_disk["arrays"]["y_pred"]["file"] == "y_pred.npy"
    assert on_disk["arrays"]["y_pred"]["dtype"] == "bfloat16"
    assert on_disk["arrays"]["y_pred"]["shape"] == [3, 2, 5]
    assert on_disk["arrays"]["y_true"] == {
        "file": "y_true.npy",
        "dtype": "int64",
        "shape": [3],
        "header_bytes": on_disk["arrays"]["y_true"]["header_bytes"],
    }
    assert on_disk["metadata"]["file"] == "metadata.parquet"
    columns = on_disk["metadata"]["columns"]
    assert list(columns) == ["timeline", "batch_idx", "group"]
    assert columns["batch_idx"] == "int64"
    assert columns == {c: str(t) for c, t in meta.dtypes.items()}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json",
        "metadata.parquet",
        "y_pred.npy",
        "y_true.npy",
    ]
    assert store.arrays == {}


def test_finalize_stopped_status(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path, fsync=False)
    store.append("y_pred", torch.zeros(2))
    manifest = store.finalize(_metadata(2), status="stopped", error="KeyboardInterrupt: ")
    assert manifest["status"] == "stopped"
    assert manifest["error"] == "KeyboardInterrupt: "
    assert manifest["complete"] is True


def test_manifest_is_published_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    published: list[tuple[str, list[str]]] = []
    real_replace = os.replace

    def recording_replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        present = sorted(p.name for p in tmp_path.iterdir())
        published.append((Path(dst).name, present))

    monkeypatch.setattr(os, "replace", recording_replace)
    store = PredictionStore(tmp_path, fsync=False)
    store.append("y_pred", torch.ones(2, 3))
    store.append("y_true", torch.ones(2, dtype=torch.int64))
    store.finalize(_metadata(2))
    names = [name for name, _ in published]
    assert sorted(names) == ["manifest.json", "metadata.parquet", "y_pred.npy", "y_true.npy"]
    assert names[-1] == MANIFEST_NAME
    # When the manifest appears, every other file is already in place and none is partial.
    assert published[-1][1] == ["manifest.json", "metadata.parquet", "y_pred.npy", "y_true.npy"]
    for name, present in published[:-1]:
        assert MANIFEST_NAME not in present, name


def test_finalize_rejects_metadata_length(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path, fsync=False)
    store.append("y_pred", torch.ones(3))
    with pytest.raises(RuntimeError, match="2 metadata rows for 3 windows"):
        store.finalize(_metadata(2))
    assert not (tmp_path / MANIFEST_NAME).exists()
    store.discard()


def test_unequal_row_counts(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path, fsync=False)
    store.append("y_pred", torch.ones(3))
    store.append("y_true", torch.ones(2))
    with pytest.raises(RuntimeError, match=r"different row counts: \{'y_pred': 3, 'y_true': 2\}"):
        _ = store.n_windows
    store.truncate(2)
    assert store.n_windows == 2
    store.discard()


def test_truncate(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path, fsync=False)
    store.capacity_hint = 2
    rows = _random(9, (2,), torch.float32, 3)
    store.append("y_pred", rows[:4])
    store.append("y_pred", rows[4:])
    store.append("y_true", torch.arange(9))
    store.truncate(5)
    assert store.n_windows == 5
    store.truncate(7)  # never grows back
    assert store.n_windows == 5
    manifest = store.finalize(_metadata(5))
    assert manifest["n_windows"] == 5
    np.testing.assert_array_equal(np.load(tmp_path / "y_pred.npy"), rows[:5].numpy())
    np.testing.assert_array_equal(np.load(tmp_path / "y_true.npy"), np.arange(5))
    header = manifest["arrays"]["y_pred"]["header_bytes"]
    assert (tmp_path / "y_pred.npy").stat().st_size == header + 5 * 2 * 4


def test_discard_leaves_partial_files(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path, fsync=False)
    store.append("y_pred", torch.ones(2, 3))
    store.append("y_true", torch.ones(2))
    store.discard()
    assert store.arrays == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json.partial",  # the in-progress marker: the reader says "interrupted"
        "y_pred.npy.partial",
        "y_true.npy.partial",
    ]
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_create_without_rows(tmp_path: Path) -> None:
    """An array created before any batch came is published with zero rows and its shape."""
    store = PredictionStore(tmp_path, fsync=False)
    created = store.create("y_pred", torch.bfloat16, (3, 2), capacity=1)
    assert store.create("y_pred", torch.float32, (9,)) is created  # existing: unchanged
    store.create("y_true", torch.int64, ())
    manifest = store.finalize(_metadata(0))
    assert manifest["arrays"]["y_pred"]["shape"] == [0, 3, 2]
    assert manifest["arrays"]["y_pred"]["dtype"] == "bfloat16"
    assert np.load(tmp_path / "y_pred.npy").shape == (0, 3, 2)
    assert np.load(tmp_path / "y_true.npy").dtype == np.int64


def test_create_capacity_at_least_hint(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path, fsync=False)
    store.capacity_hint = 5
    assert store.create("a", torch.float32, (2,), capacity=1).capacity == 5
    assert store.create("b", torch.float32, (2,), capacity=8).capacity == 8
    store.discard()


def test_empty_store_finalize(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path / "a" / "b", fsync=False)
    assert (tmp_path / "a" / "b").is_dir()
    assert store.n_windows == 0
    manifest = store.finalize(_metadata(0))
    assert manifest["n_windows"] == 0
    assert (tmp_path / "a" / "b" / MANIFEST_NAME).exists()


# -- a full disk -----------------------------------------------------------------------------
def test_full_disk_raises_oserror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PredictionStore(tmp_path, fsync=False)
    store.capacity_hint = 3
    first = _random(3, (4,), torch.float32, 0)
    store.append("y_pred", first)
    array = store.arrays["y_pred"]
    assert array.capacity == 3

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(OSError, match="No space left") as info:
        store.append("y_pred", _random(2, (4,), torch.float32, 1))
    assert info.value.errno == errno.ENOSPC
    assert array.rows == 3
    assert array.capacity == 3
    monkeypatch.undo()
    # The map is still usable and the rows written before the failure are intact.
    store.finalize(_metadata(3))
    np.testing.assert_array_equal(np.load(tmp_path / "y_pred.npy"), first.numpy())


def test_full_disk_at_creation_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(OSError, match="No space left"):
        GrowableNpy(tmp_path / "y.npy", torch.float32, (4,), 10, fsync=False)
    assert list(tmp_path.iterdir()) == []


# -- clear_folder ------------------------------------------------------------------------------
def test_clear_folder_nbstream_layout(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path, fsync=False)
    store.append("y_pred", torch.ones(2))
    store.append("y_true", torch.ones(2))
    store.finalize(_metadata(2))
    (tmp_path / "y_pred.npy.partial").write_bytes(b"leftover")
    (tmp_path / "metadata.parquet.partial").write_bytes(b"leftover")
    clear_folder(tmp_path)
    assert tmp_path.is_dir()
    assert list(tmp_path.iterdir()) == []


def test_clear_folder_exca_layout(tmp_path: Path) -> None:
    from exca.cachedict import CacheDict

    folder = tmp_path / "preds"
    cd: CacheDict = CacheDict(folder, keep_in_ram=False)
    with cd.write():
        cd["y_pred_00000000"] = np.ones((2, 3), dtype=np.float32)
        cd["y_true_00000000"] = np.ones(2, dtype=np.int64)
        cd["metadata"] = pd.DataFrame({"timeline": ["a", "b"]})
    _ = cd["metadata"]  # records the last use
    names = {p.name for p in folder.iterdir()}
    assert "data" in names and any(n.endswith("-info.jsonl") for n in names)
    assert ".exca-last-use" in names
    clear_folder(folder)
    assert folder.is_dir()
    assert list(folder.iterdir()) == []


def test_clear_folder_refuses_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "y_pred.npy").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "model.ckpt").write_bytes(b"weights")
    with pytest.raises(FileExistsError, match=r"\['model.ckpt', 'notes.txt'\].*refusing to clear"):
        clear_folder(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt", "notes.txt", "y_pred.npy"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_clear_folder_refuses_foreign_subfolder(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"w")
    with pytest.raises(FileExistsError, match="checkpoints"):
        clear_folder(tmp_path)
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_clear_folder_unlinks_symlinked_dir_without_following(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    folder = tmp_path / "preds"
    folder.mkdir()
    (folder / "data").symlink_to(outside, target_is_directory=True)
    clear_folder(folder)
    assert list(folder.iterdir()) == []
    assert (outside / "keep.txt").read_text() == "keep"


def test_clear_folder_on_a_file(tmp_path: Path) -> None:
    path = tmp_path / "preds"
    path.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is a file; the collector needs a folder path"):
        clear_folder(path)
    assert path.read_text() == "not a folder"


def test_clear_folder_missing_is_noop(tmp_path: Path) -> None:
    clear_folder(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


# -- storage_dtype ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dtype", "name", "np_dtype"),
    [
        (torch.bfloat16, "bfloat16", np.dtype("<u2")),
        (torch.float32, "float32", np.dtype(np.float32)),
        (torch.float16, "float16", np.dtype(np.float16)),
        (torch.int64, "int64", np.dtype(np.int64)),
        (torch.bool, "bool", np.dtype(bool)),
        (torch.uint8, "uint8", np.dtype(np.uint8)),
    ],
)
def test_storage_dtype(dtype: torch.dtype, name: str, np_dtype: np.dtype) -> None:
    assert storage_dtype(dtype) == (name, np_dtype)


@pytest.mark.parametrize(
    "dtype",
    [
        pytest.param(getattr(torch, "float8_e4m3fn", None), id="float8_e4m3fn"),
        pytest.param(torch.complex32, id="complex32"),
    ],
)
def test_storage_dtype_unsupported(dtype: torch.dtype | None) -> None:
    if dtype is None:
        pytest.skip("this torch has no float8_e4m3fn")
    with pytest.raises(TypeError, match=rf"cannot store dtype {dtype}.*cast the output"):
        storage_dtype(dtype)


def test_growable_refuses_unsupported_dtype(tmp_path: Path) -> None:
    dtype = getattr(torch, "float8_e4m3fn", None)
    if dtype is None:
        pytest.skip("this torch has no float8_e4m3fn")
    store = PredictionStore(tmp_path, fsync=False)
    with pytest.raises(TypeError, match="cast the output in test_step"):
        store.append("y_pred", torch.zeros(2, 3).to(dtype))
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json.partial"]


def test_publish_unlinks_on_failure(tmp_path: Path) -> None:
    def failing_write(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        store_mod._publish(tmp_path / "x.json", failing_write, fsync=False)
    assert list(tmp_path.iterdir()) == []


def _reuse_fd(number: int, path: Path) -> int:
    """Open ``path`` on descriptor ``number`` (free: its owner closed it), as the OS would."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if fd != number:
        try:
            os.fstat(number)
        except OSError:
            os.dup2(fd, number)  # the number is free: take it
            os.close(fd)
            return number
        os.close(fd)
        pytest.skip(f"descriptor {number} was taken by another file before the test could")
    return fd


# -- closing twice -----------------------------------------------------------------------------
def test_discard_after_close_leaves_reused_fd_alone(tmp_path: Path) -> None:
    """Once closed, an array must not close its old descriptor number again: the number
    may already belong to another open file."""
    array = GrowableNpy(tmp_path / "y.npy", torch.float32, (2,), 4, fsync=False)
    array.append(torch.ones(1, 2))
    old_fd = array._fd
    array.close()
    other = _reuse_fd(old_fd, tmp_path / "other.txt")
    try:
        array.discard()
        os.fstat(other)  # raises EBADF if discard closed it
    finally:
        with contextlib.suppress(OSError):
            os.close(other)


def test_failed_finalize_then_discard_leaves_other_files_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector discards the store when finalize fails; arrays closed before the
    failure must not close descriptors that were reused since."""
    store = PredictionStore(tmp_path, fsync=False)
    store.append("y_pred", torch.ones(2, 3))
    store.append("y_true", torch.ones(2))
    stale = [a._fd for a in store.arrays.values()]
    real_ftruncate = os.ftruncate
    calls = []

    def ftruncate_fails_second(fd, length):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        real_ftruncate(fd, length)

    monkeypatch.setattr(os, "ftruncate", ftruncate_fails_second)
    with pytest.raises(OSError, match="I/O error"):
        store.finalize(_metadata(2))
    monkeypatch.undo()
    others = []
    try:
        for fd in stale:  # both numbers now belong to other files
            others.append(_reuse_fd(fd, tmp_path / f"other-{fd}.txt"))
        store.discard()
        for fd in others:
            os.fstat(fd)  # raises EBADF if discard closed it
    finally:
        for fd in others:
            with contextlib.suppress(OSError):
                os.close(fd)
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_a_new_store_marks_the_folder_in_progress(tmp_path: Path) -> None:
    from nbstream import IncompletePredictionsError, read_predictions

    PredictionStore(tmp_path, fsync=False)  # a run that dies before any rows reach the disk
    with pytest.raises(IncompletePredictionsError, match="interrupted"):
        read_predictions(tmp_path)


def test_appends_hand_full_chunks_to_the_background_sync(tmp_path: Path, monkeypatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(store_mod, "_SYNC_CHUNK_BYTES", 4000)
    monkeypatch.setattr(os, "fdatasync", synced.append)
    store = PredictionStore(tmp_path)
    store.append("y_pred", torch.ones(60, 10))  # 2,400 bytes: below the chunk
    assert store.arrays["y_pred"].handed_off_rows == 0
    store.append("y_pred", torch.ones(60, 10))  # 4,800 bytes: one chunk handed over
    assert store.arrays["y_pred"].handed_off_rows == 120
    fd = store.arrays["y_pred"].fileno()
    store.finalize(_metadata(120))  # waits for the sync, then closes the file
    assert synced == [fd]
    assert "nbstream-fdatasync" not in {t.name for t in threading.enumerate()}


def test_a_failed_background_sync_publishes_nothing(tmp_path: Path, monkeypatch) -> None:
    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store_mod, "_SYNC_CHUNK_BYTES", 1)
    monkeypatch.setattr(os, "fdatasync", broken)
    store = PredictionStore(tmp_path)
    store.append("y_pred", torch.ones(4, 3))
    with pytest.raises(OSError, match=r"writing y_pred.npy.partial to the disk failed"):
        store.finalize(_metadata(4))
    store.discard()
    assert not (tmp_path / MANIFEST_NAME).exists()
    assert "nbstream-fdatasync" not in {t.name for t in threading.enumerate()}


@pytest.mark.parametrize("fsync", [True, False])
def test_handed_off_rows_read_back_exactly(tmp_path: Path, monkeypatch, fsync: bool) -> None:
    """Rows unmapped after writing (and the file growing past them) are all in the file."""
    monkeypatch.setattr(store_mod, "_SYNC_CHUNK_BYTES", 5000)  # not a page multiple
    store = PredictionStore(tmp_path, fsync=fsync)
    store.capacity_hint = 7  # grows several times
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(int(n), 33, generator=gen) for n in torch.randint(1, 60, (40,))]
    for rows in batches:
        store.append("y_pred", rows)
    assert 0 < store.arrays["y_pred"].handed_off_rows <= store.arrays["y_pred"].rows
    store.finalize(_metadata(sum(len(b) for b in batches)))
    got = np.load(tmp_path / "y_pred.npy", mmap_mode="r")
    np.testing.assert_array_equal(got, torch.cat(batches).numpy())


def _mapped_rss_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if not line.split(maxsplit=1)[0].endswith(":"):  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_written_rows_leave_the_resident_set(tmp_path: Path, monkeypatch) -> None:
    """Resident memory stays near one hand-off chunk however much is written."""
    monkeypatch.setattr(store_mod, "_SYNC_CHUNK_BYTES", 1 << 20)
    store = PredictionStore(tmp_path, fsync=False)
    store.capacity_hint = 4096
    rows = torch.ones(256, 4096)  # 4 MiB a batch
    for _ in range(8):
        store.append("y_pred", rows)
    path = store.arrays["y_pred"].partial_path
    assert _mapped_rss_kib(path) < 2 * 1024  # 32 MiB written
    store.finalize(_metadata(8 * 256))
