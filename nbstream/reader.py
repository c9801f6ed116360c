"""``read_predictions``: a predictions folder back as memmap-backed arrays and a metadata table.

Reads both layouts: nbstream's (``manifest.json``, see :mod:`nbstream.store`) as read-only
memmaps that cost no RAM until touched, and the default collector's exca ``CacheDict``
(``*-info.jsonl`` lines pointing at chunks in shared ``.data`` files, metadata as CSV),
whose chunks are concatenated in RAM exactly as the default reader does. Nothing is ever
unpickled, every file is checked to lie inside the folder and to hold the bytes its
description promises, and a folder that was being written when its run stopped is
reported as such instead of being read.
"""

from __future__ import annotations

import json
import os
import re
import typing as tp
import warnings
from pathlib import Path

import numpy as np

from nbstream.errors import (
    CorruptPredictionsError,
    IncompletePredictionsError,
    PredictionsNotFoundError,
    UnsupportedEntryError,
)
from nbstream.store import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, PARTIAL_SUFFIX

__all__ = ["StoppedEarlyWarning", "read_predictions"]

_ARRAYS = ("y_true", "y_pred")
_CHUNK_KEY = re.compile(r"^(y_pred|y_true)_(\d+)$")
_LEGACY_ARRAY_TYPES = {"MemmapArray", "ContiguousMemmapArray", "NumpyArray"}
_LEGACY_TABLE_TYPES = {"PandasDataFrame", "ParquetPandasDataFrame"}


class StoppedEarlyWarning(UserWarning):
    """The run that wrote these predictions stopped before its test loop ended."""


def read_predictions(folder: str | Path, mmap: bool = True) -> dict[str, tp.Any]:
    """Read ``{"metadata": DataFrame, "y_true": array, "y_pred": array}`` from ``folder``.

    With ``mmap=True`` (default) the arrays are read-only ``np.memmap`` views of the
    ``.npy`` files: opening costs no RAM whatever their size, and pages are read only when
    touched. ``mmap=False`` loads them into RAM. bfloat16 outputs come back with
    ``ml_dtypes.bfloat16`` dtype, bit-exact.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise PredictionsNotFoundError(
            f"{folder} {what}; run the test with the collector (save_test_predictions=True) "
            "and pass the folder it wrote"
        )
    if (folder / MANIFEST_NAME).exists():
        return _read_manifest_folder(folder, mmap)
    if any(folder.glob("*-info.jsonl")):
        return _read_legacy_folder(folder)
    names = sorted(p.name for p in folder.iterdir())
    if not names:
        raise PredictionsNotFoundError(
            f"{folder} is empty: no predictions were saved there; run the test with the "
            "collector (save_test_predictions=True)"
        )
    if any(n.endswith((PARTIAL_SUFFIX, ".npy")) for n in names):
        raise IncompletePredictionsError(
            f"{folder} holds an interrupted run: its files ({', '.join(names[:6])}) have no "
            f"complete {MANIFEST_NAME}, so the arrays may be partly written; run the test again"
        )
    raise PredictionsNotFoundError(
        f"{folder} holds no predictions (found {', '.join(names[:6])}); pass the folder the "
        "collector wrote"
    )


# -- nbstream layout -----------------------------------------------------------------------
def _read_manifest_folder(folder: Path, mmap: bool) -> dict[str, tp.Any]:
    manifest = _load_manifest(folder)
    n_windows = manifest["n_windows"]
    result: dict[str, tp.Any] = {"metadata": _read_metadata(folder, manifest, n_windows)}
    for name in _ARRAYS:
        info = manifest["arrays"].get(name)
        if info is None and n_windows == 0:
            result[name] = np.empty((0,), dtype=np.float32)  # no batch ever arrived
            continue
        if info is None:
            raise CorruptPredictionsError(f"{folder / MANIFEST_NAME} lists no array {name!r}")
        result[name] = _open_array(folder, name, info, n_windows, mmap)
    if manifest.get("status") != "finished":
        warnings.warn(
            f"the predictions in {folder} stop early ({manifest.get('error')}); they hold the "
            f"{n_windows} windows written before that",
            StoppedEarlyWarning,
            stacklevel=3,
        )
    return {"metadata": result["metadata"], "y_true": result["y_true"], "y_pred": result["y_pred"]}


def _load_manifest(folder: Path) -> dict[str, tp.Any]:
    path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptPredictionsError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise CorruptPredictionsError(f"{path} is not an nbstream manifest")
    version: tp.Any = manifest.get("format_version")
    if not _is_count(version) or version > FORMAT_VERSION:
        raise CorruptPredictionsError(
            f"{path} has format_version {version!r}; this nbstream reads up to "
            f"{FORMAT_VERSION}: upgrade nbstream"
        )
    if manifest.get("complete") is not True:
        raise IncompletePredictionsError(
            f"{path} does not mark the predictions complete: the run was interrupted; run "
            "the test again"
        )
    n_windows = manifest.get("n_windows")
    if not _is_count(n_windows) or not isinstance(manifest.get("arrays"), dict):
        raise CorruptPredictionsError(f"{path} lacks a valid n_windows or arrays entry")
    for name, info in manifest["arrays"].items():
        if not (
            isinstance(info, dict)
            and isinstance(info.get("file"), str)
            and isinstance(info.get("dtype"), str)
            and isinstance(info.get("shape"), list)
            and all(_is_count(d) for d in info["shape"])
            and _is_count(info.get("header_bytes"))
        ):
            raise CorruptPredictionsError(
                f"{path}: entry of array {name!r} needs file, dtype, shape (counts) and "
                f"header_bytes; got {info!r}"
            )
    metadata = manifest.get("metadata")
    if not (isinstance(metadata, dict) and isinstance(metadata.get("columns"), dict)):
        raise CorruptPredictionsError(f"{path}: the metadata entry needs file and columns")
    return manifest


def _is_count(value: tp.Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _inside(folder: Path, name: tp.Any) -> Path:
    """The path of a file the manifest names, refusing any that would leave ``folder``."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in {".", ".."}:
        raise CorruptPredictionsError(
            f"{folder / MANIFEST_NAME} names file {name!r}, which is not a plain file name "
            "inside the folder; refusing to read outside it"
        )
    path = folder / name
    if path.resolve().parent != folder.resolve():
        raise CorruptPredictionsError(
            f"{path} links outside {folder}; refusing to read outside the predictions folder"
        )
    return path


def _stored_dtype(name: str) -> tuple[np.dtype, np.dtype | None]:
    """The dtype the ``.npy`` holds, and the dtype to view it as (bfloat16)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype("<u2"), np.dtype(ml_dtypes.bfloat16)
    try:
        return np.dtype(name), None
    except TypeError as exc:
        raise CorruptPredictionsError(f"unknown dtype {name!r} in the manifest") from exc


def _open_array(
    folder: Path, name: str, info: dict[str, tp.Any], n_windows: int, mmap: bool
) -> np.ndarray:
    path = _inside(folder, info.get("file"))
    stored, view_as = _stored_dtype(str(info.get("dtype")))
    shape = tuple(info.get("shape") or ())
    if not shape or shape[0] != n_windows:
        raise CorruptPredictionsError(
            f"{name} has shape {shape} in the manifest but the folder holds {n_windows} windows"
        )
    expected = int(info.get("header_bytes", 0)) + int(np.prod(shape)) * stored.itemsize
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise CorruptPredictionsError(f"{path} is missing but the manifest lists it") from exc
    if size != expected:
        raise CorruptPredictionsError(
            f"{path} holds {size} bytes but its manifest entry (shape {shape}, "
            f"{info.get('dtype')}) needs {expected}; the file was truncated or changed"
        )
    try:
        # allow_pickle stays False: an object array is refused, never unpickled.
        # An empty array cannot be memory-mapped; loading it costs nothing anyway.
        use_mmap = mmap and expected > int(info.get("header_bytes", 0))
        array = np.load(path, mmap_mode="r" if use_mmap else None, allow_pickle=False)
    except ValueError as exc:
        raise CorruptPredictionsError(f"{path} is not a readable .npy file ({exc})") from exc
    if array.dtype != stored or array.shape != shape:
        raise CorruptPredictionsError(
            f"{path} holds {array.dtype} {array.shape}, its manifest says {stored} {shape}"
        )
    return array if view_as is None else array.view(view_as)


def _read_metadata(folder: Path, manifest: dict[str, tp.Any], n_windows: int) -> tp.Any:
    import pandas as pd

    info = manifest.get("metadata") or {}
    path = _inside(folder, info.get("file"))
    try:
        frame = _fast_read_parquet(path)
        written = info.get("columns", {})
        if {c: str(t) for c, t in frame.dtypes.items()} != written:
            frame = pd.read_parquet(path)  # pandas' own mapping of types, the reference
    except FileNotFoundError as exc:
        raise CorruptPredictionsError(f"{path} is missing but the manifest lists it") from exc
    except Exception as exc:  # pyarrow raises its own error types for damaged files
        raise CorruptPredictionsError(f"{path} is not a readable Parquet file ({exc})") from exc
    if len(frame) != n_windows or list(frame.columns) != list(info.get("columns", {})):
        raise CorruptPredictionsError(
            f"{path} has {len(frame)} rows and columns {list(frame.columns)}; the manifest "
            f"says {n_windows} rows and {list(info.get('columns', {}))}"
        )
    return frame


def _fast_read_parquet(path: Path) -> tp.Any:
    """A small Parquet table as a DataFrame, on this thread, without ``pyarrow.dataset``.

    Why not ``pd.read_parquet``: it goes through ``pyarrow.dataset`` (about 10 ms to import
    on a first call) and Arrow's thread pool, several times the cost of reading a metadata
    table of a few thousand rows. The caller checks the dtypes against the manifest and
    falls back to ``pd.read_parquet`` if this pandas maps a type differently.
    """
    import pyarrow.parquet as pq

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "make_block is deprecated")  # older pyarrow
        table = pq.ParquetFile(path, pre_buffer=False).read(use_threads=False)
        return table.to_pandas(use_threads=False)


# -- the default collector's exca CacheDict layout -----------------------------------------
def _legacy_entries(folder: Path) -> dict[str, dict[str, tp.Any]]:
    """Key -> entry of every ``*-info.jsonl`` line (later lines win, blanked lines skipped)."""
    entries: dict[str, dict[str, tp.Any]] = {}
    for info_file in sorted(folder.glob("*-info.jsonl")):
        for line in info_file.read_bytes().splitlines():
            if not line.strip():
                continue  # exca blanks deleted entries with spaces
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted write names nothing usable
            if isinstance(entry, dict) and isinstance(entry.get("#key"), str):
                entries[entry["#key"]] = entry
    return entries


def _legacy_layout(folder: Path) -> tuple[dict[str, dict[str, tp.Any]], dict[str, list[str]]]:
    """The checked entries of a default-collector folder, and each array's chunk keys in order.

    Reads only the ``*-info.jsonl`` lines: an entry that would need unpickling is refused
    before anything is loaded, and a folder without metadata is an interrupted run.
    """
    entries = _legacy_entries(folder)
    for key, entry in entries.items():
        kind = entry.get("#type")
        if kind not in _LEGACY_ARRAY_TYPES | _LEGACY_TABLE_TYPES:
            raise UnsupportedEntryError(
                f"entry {key!r} in {folder} is stored as {kind!r}; nbstream reads only arrays "
                "and tables and never unpickles: re-run the test to rewrite the folder"
            )
    if "metadata" not in entries:
        raise IncompletePredictionsError(
            f"{folder} holds default-collector chunks but no metadata entry: the run was "
            "interrupted before the test epoch ended; run the test again"
        )
    chunks: dict[str, list[tuple[int, str]]] = {name: [] for name in _ARRAYS}
    for key in entries:
        match = _CHUNK_KEY.match(key)
        if match:
            chunks[match.group(1)].append((int(match.group(2)), key))
    return entries, {name: [key for _, key in sorted(chunks[name])] for name in _ARRAYS}


def _read_legacy_folder(folder: Path) -> dict[str, tp.Any]:
    entries, chunk_keys = _legacy_layout(folder)
    maps: dict[Path, np.memmap] = {}
    result: dict[str, tp.Any] = {"metadata": _legacy_table(folder, entries["metadata"])}
    for name in _ARRAYS:
        parts = [_legacy_array(folder, key, entries[key], maps) for key in chunk_keys[name]]
        result[name] = np.concatenate(parts) if parts else np.empty((0,), dtype=np.float32)
    return {"metadata": result["metadata"], "y_true": result["y_true"], "y_pred": result["y_pred"]}


def _legacy_path(folder: Path, name: tp.Any, key: str) -> Path:
    parts = Path(name).parts if isinstance(name, str) else ()
    if not parts or any(p in {"..", "."} for p in parts) or Path(name).is_absolute():
        raise CorruptPredictionsError(f"entry {key!r} names {name!r}, outside {folder}")
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise CorruptPredictionsError(f"entry {key!r} links outside {folder}")
    return path


def _legacy_array(
    folder: Path, key: str, entry: dict[str, tp.Any], maps: dict[Path, np.memmap]
) -> np.ndarray:
    path = _legacy_path(folder, entry.get("filename"), key)
    if entry["#type"] == "NumpyArray":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise CorruptPredictionsError(
                f"{path} (entry {key!r}) is truncated or not a readable .npy file ({exc})"
            ) from exc
    dtype = np.dtype(entry["dtype"])
    if dtype.hasobject:
        raise UnsupportedEntryError(f"entry {key!r} has object dtype; refusing to read it")
    shape = tuple(entry["shape"])
    offset = int(entry["offset"])
    length = int(np.prod(shape)) * dtype.itemsize
    size = os.path.getsize(path)
    if offset + length > size:
        raise CorruptPredictionsError(
            f"{path} holds {size} bytes but entry {key!r} needs bytes {offset}..{offset + length}"
            "; the file was truncated"
        )
    if path not in maps:
        maps[path] = np.memmap(path, dtype=np.uint8, mode="r")
    return maps[path][offset : offset + length].view(dtype).reshape(shape)


def _legacy_table(folder: Path, entry: dict[str, tp.Any]) -> tp.Any:
    import pandas as pd

    path = _legacy_path(folder, entry.get("filename"), "metadata")
    if entry["#type"] == "ParquetPandasDataFrame":
        return pd.read_parquet(path, dtype_backend="numpy_nullable")  # as exca reads it
    return pd.read_csv(path, index_col=0, keep_default_na=False, na_values=[""])
