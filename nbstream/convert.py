"""Convert a folder written by the default collector into nbstream's layout.

Source: the default collector's exca ``CacheDict`` (``*-info.jsonl`` lines pointing at one
chunk per batch and array, ``y_pred_%08d`` / ``y_true_%08d``, in shared ``.data`` files or
``.npy`` files, and the metadata table under ``metadata``, as CSV or Parquet). Destination:
the layout written down in :mod:`nbstream.store` (``y_pred.npy``, ``y_true.npy``,
``metadata.parquet``, ``manifest.json``), which :func:`nbstream.read_predictions` opens as
memmaps. By default the destination is the sibling folder ``<SRC>-nbstream``.

How, and why this way:

* Only the ``*-info.jsonl`` lines are read first: an entry that would need unpickling, or
  any type outside the reader's allow-list, is refused before a single chunk is opened.
* Each chunk is opened as a read-only memmap view (no RAM until touched); chunks are copied
  by :func:`nbstream.kernels.concatenate` into a preallocated ``.npy`` memmap, a group of
  about one kernel block (64 MiB) per call, whose pages are handed back after each block.
  Peak RSS is about one block, whatever the folder size.
* The result is built in ``<DST>.partial`` (files published as the store does, manifest
  last) and renamed to ``DST`` when complete; on failure the partial folder is removed, so
  ``DST`` either does not exist or is complete. The source is only ever opened read-only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import typing as tp
from pathlib import Path

import numpy as np

from nbstream import _numba_config as _cfg
from nbstream.errors import CorruptPredictionsError, PredictionsNotFoundError, UnsupportedEntryError
from nbstream.reader import (
    _ARRAYS,
    _LEGACY_ARRAY_TYPES,
    _LEGACY_TABLE_TYPES,
    _legacy_array,
    _legacy_layout,
    _legacy_path,
    _legacy_table,
)
from nbstream.store import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    METADATA_NAME,
    PARTIAL_SUFFIX,
    _fsync_dir,
    _publish,
    clear_folder,
)

__all__ = ["DEFAULT_SUFFIX", "convert_legacy", "default_destination"]

#: ``convert_legacy(src)`` writes to the sibling folder ``<src><DEFAULT_SUFFIX>``.
DEFAULT_SUFFIX = "-nbstream"


def _group_bytes() -> int:
    """Bytes of chunks copied per kernel call (one kernel block: bounds the RAM touched)."""
    return max(1, _cfg.STREAM_BLOCK_BYTES)


def default_destination(src: str | os.PathLike[str]) -> Path:
    """Where ``convert_legacy(src)`` writes by default: the sibling ``<src>-nbstream``."""
    src = Path(os.path.abspath(src))  # "." and ".." name the folder they stand for
    return src.with_name(src.name + DEFAULT_SUFFIX)


def convert_legacy(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    *,
    progress: bool | None = None,
) -> Path:
    """Rewrite a default-collector predictions folder ``src`` in nbstream's layout at ``dst``.

    Args:
        src: a folder written by the default collector (exca ``CacheDict``); left untouched.
        dst: the new folder; default ``<src>-nbstream`` next to ``src``. It must not exist
            or be empty, and must not lie inside ``src``.
        progress: show a progress bar on stderr: ``None`` (default) when stderr is a
            terminal, ``True`` always, ``False`` never.

    Returns:
        Path: ``dst``, complete; ``read_predictions(dst)`` gives the same metadata and
        bit-identical arrays as the default reader, as memmaps.

    Raises:
        PredictionsNotFoundError: ``src`` is missing or holds no default-collector folder.
        IncompletePredictionsError: ``src`` is an interrupted run (no metadata entry).
        UnsupportedEntryError: an entry would need unpickling (never loaded).
        CorruptPredictionsError: chunks disagree in dtype or shape, or with the metadata.
        FileExistsError: ``dst`` exists and is not empty.
    """
    src = Path(src)
    dst = default_destination(src) if dst is None else Path(dst)
    entries, chunk_keys = _source_layout(src)
    _check_destination(src, dst)
    maps: dict[Path, np.memmap] = {}
    chunks = {
        name: [_chunk(src, k, entries[k], maps) for k in chunk_keys[name]] for name in _ARRAYS
    }
    layouts = {name: _stacked(name, parts) for name, parts in chunks.items() if parts}
    metadata = _legacy_table(src, entries["metadata"]).reset_index(drop=True)
    n_windows = len(metadata)
    for name, (_, shape) in layouts.items():
        if shape[0] != n_windows:
            raise CorruptPredictionsError(
                f"{src}: the chunks of {name} hold {shape[0]} rows but the metadata has "
                f"{n_windows}; the folder was changed or truncated"
            )
    if n_windows and len(layouts) != len(_ARRAYS):
        missing = sorted(set(_ARRAYS) - set(layouts))
        raise CorruptPredictionsError(f"{src}: metadata has {n_windows} rows but no {missing}")

    partial = dst.with_name(dst.name + PARTIAL_SUFFIX)
    clear_folder(partial)  # left by a conversion that was killed; refuses foreign files
    partial.mkdir(parents=True, exist_ok=True)
    total = sum(int(np.prod(shape)) * dtype.itemsize for dtype, shape in layouts.values())
    try:
        with _progress_bar(total, progress, f"converting {src.name}") as bar:
            arrays = {
                name: _write_array(partial / f"{name}.npy", chunks[name], *layouts[name], bar)
                for name in layouts
            }
        chunks.clear()
        maps.clear()
        _finalize(partial, metadata, arrays)
        os.replace(partial, dst)  # dst is absent or an empty folder
        _fsync_dir(dst.absolute().parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return dst


# -- source --------------------------------------------------------------------------------
def _source_layout(src: Path) -> tuple[dict[str, dict[str, tp.Any]], dict[str, list[str]]]:
    if not src.is_dir():
        what = "is not a folder" if src.exists() else "does not exist"
        raise PredictionsNotFoundError(
            f"{src} {what}; pass the folder the default collector wrote (it holds "
            "*-info.jsonl files)"
        )
    if (src / MANIFEST_NAME).exists():
        raise PredictionsNotFoundError(
            f"{src} is already in nbstream's layout ({MANIFEST_NAME}); there is nothing to "
            "convert: read it with nbstream.read_predictions"
        )
    if not any(src.glob("*-info.jsonl")):
        names = sorted(p.name for p in src.iterdir())
        found = f"found {', '.join(names[:6])}" if names else "it is empty"
        raise PredictionsNotFoundError(
            f"{src} holds no default-collector predictions (no *-info.jsonl; {found}); pass "
            "the folder the default collector wrote"
        )
    entries, chunk_keys = _legacy_layout(src)
    if entries["metadata"].get("#type") not in _LEGACY_TABLE_TYPES:
        raise CorruptPredictionsError(
            f"{src}: entry 'metadata' is stored as {entries['metadata'].get('#type')!r}, "
            f"expected a table ({sorted(_LEGACY_TABLE_TYPES)})"
        )
    for key in (k for keys in chunk_keys.values() for k in keys):
        if entries[key].get("#type") not in _LEGACY_ARRAY_TYPES:
            raise CorruptPredictionsError(
                f"{src}: entry {key!r} is stored as {entries[key].get('#type')!r}, expected "
                f"an array ({sorted(_LEGACY_ARRAY_TYPES)})"
            )
    return entries, chunk_keys


def _chunk(
    folder: Path, key: str, entry: dict[str, tp.Any], maps: dict[Path, np.memmap]
) -> np.ndarray:
    """A read-only memmap view of one chunk (no RAM until touched); nothing is unpickled."""
    if entry["#type"] != "NumpyArray":
        try:
            return _legacy_array(folder, key, entry, maps)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, UnsupportedEntryError | CorruptPredictionsError):
                raise
            raise CorruptPredictionsError(
                f"entry {key!r} in {folder} lacks a valid dtype, shape or offset ({exc!r})"
            ) from exc
    path = _legacy_path(folder, entry.get("filename"), key)
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(f)
            offset = f.tell()
    except (ValueError, OSError) as exc:
        raise CorruptPredictionsError(f"{path} (entry {key!r}) is not a .npy file ({exc})") from exc
    if dtype.hasobject:
        raise UnsupportedEntryError(f"entry {key!r} has object dtype; refusing to read it")
    order: tp.Literal["C", "F"] = "F" if fortran_order else "C"
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype, order=order)
    try:
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)
    except ValueError as exc:  # the file is shorter than its header says
        raise CorruptPredictionsError(f"{path} (entry {key!r}) is truncated ({exc})") from exc


def _stacked(name: str, parts: list[np.ndarray]) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape of ``parts`` stacked; every chunk must agree with the first."""
    first = parts[0]
    for i, p in enumerate(parts):
        if p.ndim == 0 or p.dtype != first.dtype or p.shape[1:] != first.shape[1:]:
            raise CorruptPredictionsError(
                f"chunk {i} of {name} is {p.dtype} {p.shape}, chunk 0 is {first.dtype} "
                f"{first.shape}; chunks must share dtype and shape after the first dimension"
            )
    return first.dtype, (sum(p.shape[0] for p in parts), *first.shape[1:])


# -- destination ---------------------------------------------------------------------------
def _check_destination(src: Path, dst: Path) -> None:
    if dst.resolve() == src.resolve():
        raise FileExistsError(
            f"destination {dst} is the source folder; pass another destination (default: "
            f"{default_destination(src)})"
        )
    if dst.resolve().is_relative_to(src.resolve()):
        raise ValueError(
            f"destination {dst} lies inside the source {src}, which must stay untouched; "
            "pass a destination outside it"
        )
    if dst.is_dir() and not any(dst.iterdir()):
        return
    if dst.exists() or dst.is_symlink():
        raise FileExistsError(
            f"destination {dst} already exists and is not an empty folder; pass another "
            "destination or remove it"
        )


def _manifest_dtype(dtype: np.dtype) -> str:
    """The name of ``dtype`` in the manifest (the reader turns it back with ``np.dtype``)."""
    for name in (dtype.name, dtype.str):
        with contextlib.suppress(TypeError):
            if np.dtype(name) == dtype:
                return name
    raise UnsupportedEntryError(f"cannot store chunks of dtype {dtype!r}: it has no plain name")


def _write_array(
    path: Path,
    parts: list[np.ndarray],
    dtype: np.dtype,
    shape: tuple[int, ...],
    bar: tp.Any,
) -> dict[str, tp.Any]:
    """Copy ``parts`` into a new ``.npy`` at ``path``, a kernel block at a time."""
    from nbstream.kernels import concatenate

    name = _manifest_dtype(dtype)
    if int(np.prod(shape)) == 0:
        np.save(path, np.empty(shape, dtype), allow_pickle=False)
        return _array_entry(path, name, shape, path.stat().st_size)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    try:
        with path.open("r+b") as f:  # reserve the blocks: a full disk fails here, not in a
            os.posix_fallocate(f.fileno(), 0, path.stat().st_size)  # page fault (SIGBUS)
        row, group, group_bytes = 0, [], 0
        for i, part in enumerate(parts):
            group.append(part)
            group_bytes += part.nbytes
            if group_bytes >= _group_bytes() or i == len(parts) - 1:
                rows = sum(p.shape[0] for p in group)
                concatenate(group, out=out[row : row + rows])
                bar.update(group_bytes)
                row, group, group_bytes = row + rows, [], 0
        out.flush()
        header_bytes = int(out.offset)
    finally:
        del out
    with path.open("rb") as f:
        os.fsync(f.fileno())
    return _array_entry(path, name, shape, header_bytes)


def _array_entry(path: Path, dtype: str, shape: tuple[int, ...], header: int) -> dict[str, tp.Any]:
    return {"file": path.name, "dtype": dtype, "shape": list(shape), "header_bytes": header}


def _finalize(folder: Path, metadata: tp.Any, arrays: dict[str, dict[str, tp.Any]]) -> None:
    """Metadata, then the manifest, as :meth:`nbstream.store.PredictionStore.finalize` does."""
    _publish(folder / METADATA_NAME, lambda tmp: metadata.to_parquet(tmp, index=False), fsync=True)
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "complete": True,
        "status": "finished",
        "error": None,
        "n_windows": len(metadata),
        "arrays": arrays,
        "metadata": {
            "file": METADATA_NAME,
            "columns": {c: str(t) for c, t in metadata.dtypes.items()},
        },
    }
    text = json.dumps(manifest, indent=1).encode()
    _publish(folder / MANIFEST_NAME, lambda tmp: tmp.write_bytes(text), fsync=True)
    _fsync_dir(folder)


# -- progress ------------------------------------------------------------------------------
class _NoBar:
    def update(self, n: int) -> None:
        pass


@contextlib.contextmanager
def _progress_bar(total: int, show: bool | None, desc: str) -> tp.Iterator[tp.Any]:
    """A tqdm bar over ``total`` bytes on stderr, or a silent stand-in."""
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        yield _NoBar()
        return
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with lightning; without it, convert quietly
        yield _NoBar()
        return
    bar = tqdm(
        total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr
    )
    try:
        yield bar
    finally:
        bar.close()
