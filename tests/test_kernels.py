"""nbstream.kernels against the naive twins in tests/naive.py, on both the numpy and Numba paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nbstream import _numba_config, kernels

from . import naive

DTYPES = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.longdouble,
    np.complex64,
    np.complex128,
    ml_dtypes.bfloat16,
]
TRAILING = [(), (3,), (2, 3), (2, 1, 3)]
SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _values(rng: np.random.Generator, n: int, trailing: tuple[int, ...], dtype) -> np.ndarray:
    x = rng.normal(size=(n, *trailing)) * 50
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return (x + 1j * rng.normal(size=x.shape)).astype(dtype)
    if dtype == np.bool_:
        return x > 0
    if dtype.kind == "u":
        return np.abs(x).astype(dtype)
    return x.astype(dtype)


def _memmap(tmp_path: Path, array: np.ndarray, name: str = "a.npy") -> np.memmap:
    np.save(tmp_path / name, array)
    mm = np.load(tmp_path / name, mmap_mode="r")
    return mm.view(array.dtype)  # bfloat16 is saved as raw 2-byte voids


def _same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


# --------------------------------------------------------------------------- concatenate


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("trailing", TRAILING, ids=str)
def test_concatenate_copies_non_adjacent_parts(path: str, dtype, trailing) -> None:
    base = _values(np.random.default_rng(0), 20, trailing, dtype)
    parts = [base[:3], base[5:12], base[12:12], base[15:]]
    got = kernels.concatenate(parts)
    _same(got, naive.concatenate(parts))
    assert not np.shares_memory(got, base)


@pytest.mark.parametrize("trailing", TRAILING, ids=str)
def test_concatenate_adjacent_parts_is_a_view(trailing) -> None:
    base = _values(np.random.default_rng(1), 30, trailing, np.float32)
    parts = [base[:4], base[4:4], base[4:17], base[17:]]
    got = kernels.concatenate(parts)
    assert np.shares_memory(got, base)
    assert got.__array_interface__["data"][0] == base.__array_interface__["data"][0]
    _same(got, base)


def test_concatenate_adjacent_memmap_chunks_is_a_memmap_view(tmp_path: Path) -> None:
    file = np.arange(4 * 10 * 3, dtype=np.float64).reshape(40, 3)
    mm = _memmap(tmp_path, file)
    got = kernels.concatenate([mm[10:20], mm[20:25], mm[25:40]])
    assert isinstance(got, np.memmap)
    assert np.shares_memory(got, mm) and not got.flags.writeable
    _same(got, file[10:])


def test_concatenate_single_part_and_adjacent_strided_rows() -> None:
    base = np.arange(24, dtype=np.int16).reshape(6, 4)
    assert np.shares_memory(kernels.concatenate([base]), base)
    cols = base[:, ::2]  # not C-contiguous: copied
    got = kernels.concatenate([cols[:3], cols[3:]])
    _same(got, np.ascontiguousarray(cols))
    assert not np.shares_memory(got, base)


def test_concatenate_memmap_parts_into_out_path(path: str, tmp_path: Path) -> None:
    data = _values(np.random.default_rng(2), 64, (5,), np.float32)
    mm = _memmap(tmp_path, data)
    parts = [mm[i : i + 4] for i in range(0, 64, 8)]  # every other chunk, legacy-like
    got = kernels.concatenate(parts, out=tmp_path / "out.npy")
    assert isinstance(got, np.memmap) and Path(got.filename) == (tmp_path / "out.npy").resolve()
    got.flush()
    _same(np.load(tmp_path / "out.npy", mmap_mode="r"), naive.concatenate(parts))
    assert not (tmp_path / "out.npy.partial").exists()


def test_concatenate_into_out_array(path: str) -> None:
    data = _values(np.random.default_rng(3), 10, (2, 3), np.int32)
    out = np.full((10, 2, 3), -1, np.int32)
    got = kernels.concatenate([data[:5], data[5:]], out=out)  # adjacent, but out is filled
    assert got is out
    _same(out, data)


def test_concatenate_empty_parts() -> None:
    got = kernels.concatenate([np.empty((0, 3), np.float32), np.empty((0, 3), np.float32)])
    assert got.shape == (0, 3) and got.dtype == np.float32
    assert kernels.concatenate([np.empty((2, 0))]).shape == (2, 0)


@SETTINGS
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=6),
    gaps=st.lists(st.integers(0, 2), min_size=6, max_size=6),
    width=st.integers(1, 4),
)
def test_concatenate_matches_numpy(path: str, lengths: list[int], gaps: list[int], width) -> None:
    base = np.arange((sum(lengths) + sum(gaps)) * width, dtype=np.float64).reshape(-1, width)
    parts, row = [], 0
    for n, gap in zip(lengths, gaps, strict=False):
        parts.append(base[row : row + n])
        row += n + gap
    got = kernels.concatenate(parts)
    _same(got, naive.concatenate(parts))
    if all(g == 0 for g in gaps[: len(lengths) - 1]) and sum(lengths):
        assert np.shares_memory(got, base)


def test_concatenate_errors(tmp_path: Path) -> None:
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"part 1 has dtype float64, expected float32"):
        kernels.concatenate([a, a.astype(np.float64)])
    with pytest.raises(ValueError, match=r"part 2 has shape \(2, 4\), expected \(n_2, 3,\)"):
        kernels.concatenate([a, a, np.zeros((2, 4), np.float32)])
    with pytest.raises(ValueError, match="got 0 parts"):
        kernels.concatenate([])
    with pytest.raises(ValueError, match="part 0 is a 0-d array"):
        kernels.concatenate([np.float32(1)])
    with pytest.raises(TypeError, match=r"pass \[array\] for a single part"):
        kernels.concatenate(a)
    with pytest.raises(ValueError, match=r"out has shape \(3, 3\).*expected \(4, 3\)"):
        kernels.concatenate([a, a[::-1]], out=np.empty((3, 3), np.float32))
    with pytest.raises(ValueError, match="out is read-only"):
        kernels.concatenate([a, a[::-1]], out=_memmap(tmp_path, np.empty((4, 3), np.float32)))


# --------------------------------------------------------------------------- group index

CODES = {
    "empty": np.array([], np.int64),
    "one row": np.array([0]),
    "one group": np.zeros(7, np.int64),
    "all unique": np.arange(9)[::-1].copy(),
    "mixed": np.array([3, 1, 3, 0, 1, 2, 2, 3]),
}


def _check_index(index: kernels.GroupIndex, codes: np.ndarray) -> None:
    firsts, inverse, counts = naive.group_index(codes)
    np.testing.assert_array_equal(index.firsts, firsts)
    np.testing.assert_array_equal(index.inverse, inverse)
    np.testing.assert_array_equal(index.counts, counts)
    for g in range(counts.size):
        np.testing.assert_array_equal(
            index.order[index.offsets[g] : index.offsets[g + 1]], np.flatnonzero(inverse == g)
        )
    assert all(a.dtype == np.int64 for a in index)


@pytest.mark.parametrize("codes", CODES.values(), ids=CODES.keys())
def test_group_index_cases(path: str, codes: np.ndarray) -> None:
    _check_index(kernels.group_index(codes), codes)


@SETTINGS
@given(codes=hnp.arrays(np.int64, st.integers(0, 40), elements=st.integers(0, 6)))
def test_group_index_matches_pandas(path: str, codes: np.ndarray) -> None:
    _check_index(kernels.group_index(codes, 7), codes)


def test_group_index_errors() -> None:
    with pytest.raises(ValueError, match=r"codes span \[-1, 2\], expected \[0, 3\)"):
        kernels.group_index(np.array([0, -1, 2]), 3)
    with pytest.raises(ValueError, match=r"expected one code per row"):
        kernels.group_index(np.zeros((2, 2), np.int64))


# --------------------------------------------------------------------------- reductions


def _index(codes: np.ndarray) -> kernels.GroupIndex:
    return kernels._np_group_index(np.asarray(codes, np.int64))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("trailing", TRAILING, ids=str)
def test_group_reduce_all_dtypes(path: str, dtype, trailing) -> None:
    values = _values(np.random.default_rng(4), 12, trailing, dtype)
    codes = np.array([2, 0, 2, 1, 1, 0, 2, 3, 3, 3, 0, 2])
    index = _index(codes)
    _same(kernels.group_reduce(values, index, "first"), naive.group_first(values, index.inverse))
    mean = kernels.group_reduce(values, index, "mean")
    want = naive.group_mean(values, index.inverse)
    assert mean.dtype == want.dtype and mean.shape == want.shape
    np.testing.assert_allclose(mean.astype(np.complex128), want.astype(np.complex128), rtol=1e-6)


@pytest.mark.parametrize("codes", list(CODES.values())[1:], ids=list(CODES)[1:])
def test_group_reduce_edge_cases(path: str, codes: np.ndarray) -> None:
    values = _values(np.random.default_rng(5), codes.size, (4,), np.float64)
    index = _index(codes)
    np.testing.assert_array_equal(
        kernels.group_reduce(values, index, "first"), values[index.firsts]
    )
    np.testing.assert_allclose(
        kernels.group_reduce(values, index, "mean"), naive.group_mean(values, index.inverse)
    )


def test_group_reduce_empty(path: str) -> None:
    index = _index(np.array([], np.int64))
    values = np.empty((0, 2, 3), np.float32)
    assert kernels.group_reduce(values, index, "mean").shape == (0, 2, 3)
    assert kernels.group_reduce(values, index, "first").shape == (0, 2, 3)
    n_diff, max_diff = kernels.group_disagreement(values, index)
    assert n_diff.shape == max_diff.shape == (0,)


def test_group_reduce_nan_and_non_contiguous(path: str) -> None:
    base = _values(np.random.default_rng(6), 16, (6,), np.float32)
    base[2, 2] = np.nan  # values[1, 1]: group 1
    values = base[::2, ::2]  # strided rows and columns
    codes = np.array([0, 1, 0, 2, 1, 0, 3, 3])
    index = _index(codes)
    mean = kernels.group_reduce(values, index, "mean")
    np.testing.assert_allclose(mean, naive.group_mean(values, index.inverse), rtol=1e-6)
    assert np.isnan(mean[1, 1]) and not np.isnan(mean[1, 0])
    _same(kernels.group_reduce(values, index, "first"), naive.group_first(values, index.inverse))


@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.complex64, ml_dtypes.bfloat16])
def test_group_reduce_streams_a_memmap(path: str, tmp_path: Path, dtype) -> None:
    values = _values(np.random.default_rng(7), 50, (3, 2), dtype)
    mm = _memmap(tmp_path, values)
    index = _index(np.random.default_rng(8).integers(0, 7, 50))
    _same(kernels.group_reduce(mm, index, "first"), naive.group_first(values, index.inverse))
    np.testing.assert_allclose(
        kernels.group_reduce(mm, index, "mean").astype(np.complex128),
        naive.group_mean(values, index.inverse).astype(np.complex128),
        rtol=1e-6,
    )
    got = kernels.group_disagreement(mm, index)
    want = naive.group_disagreement(values, index.inverse)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)


@SETTINGS
@given(
    data=st.data(),
    trailing=st.sampled_from(TRAILING),
    dtype=st.sampled_from([np.float32, np.float64, np.int16]),
)
def test_group_reduce_matches_naive(path: str, data: st.DataObject, trailing, dtype) -> None:
    n = data.draw(st.integers(1, 20))
    codes = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, 4)))
    floats = st.floats(-1e3, 1e3, width=32) | st.just(np.nan)
    elements = st.integers(-100, 100) if np.dtype(dtype).kind == "i" else floats
    values = data.draw(hnp.arrays(dtype, (n, *trailing), elements=elements))
    index = _index(codes)
    _same(kernels.group_reduce(values, index, "first"), naive.group_first(values, index.inverse))
    np.testing.assert_allclose(
        kernels.group_reduce(values, index, "mean"),
        naive.group_mean(values, index.inverse),
        rtol=1e-9,
    )
    got = kernels.group_disagreement(values, index)
    want = naive.group_disagreement(values, index.inverse)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-9)


def test_group_reduce_rejects_unknown_reduction() -> None:
    with pytest.raises(ValueError, match=r"how='median'; expected 'first' or 'mean'"):
        kernels.group_reduce(np.zeros((2, 2)), _index(np.array([0, 0])), "median")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- consistency


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_group_disagreement_all_dtypes(path: str, dtype) -> None:
    values = _values(np.random.default_rng(9), 9, (2, 2), dtype)
    codes = np.array([0, 1, 0, 2, 1, 0, 2, 2, 3])
    values[2] = values[0]  # group 0 partly consistent
    values[4] = values[1]  # group 1 fully consistent
    index = _index(codes)
    got = kernels.group_disagreement(values, index)
    want = naive.group_disagreement(values, index.inverse)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-3 if np.dtype(dtype).itemsize < 4 else 1e-6)
    assert got[0][1] == 0 and got[0][3] == 0


def test_group_disagreement_nan(path: str) -> None:
    values = np.array([[np.nan, 1.0], [np.nan, 1.0], [np.nan, 2.5], [1.0, 1.0], [np.inf, 1.0]])
    n_diff, max_diff = kernels.group_disagreement(values, _index(np.array([0, 0, 0, 1, 1])))
    np.testing.assert_array_equal(n_diff, [1, 1])
    np.testing.assert_array_equal(max_diff, [1.5, np.inf])
    n_diff, max_diff = kernels.group_disagreement(values[:3, :1], _index(np.zeros(3, np.int64)))
    assert n_diff.tolist() == [0] and max_diff.tolist() == [0.0]  # NaN == NaN
    n_diff, max_diff = kernels.group_disagreement(values[2:4, :1], _index(np.zeros(2, np.int64)))
    assert n_diff.tolist() == [1] and max_diff.tolist() == [np.inf]  # NaN vs a number


def test_group_disagreement_is_exact_for_large_integers(path: str) -> None:
    values = np.array([[2**60], [2**60 + 1]], np.int64)
    n_diff, _ = kernels.group_disagreement(values, _index(np.zeros(2, np.int64)))
    assert n_diff.tolist() == [1]


# --------------------------------------------------------------------------- import cost


def test_import_does_not_load_numba() -> None:
    code = (
        "import sys, numpy as np; import nbstream.kernels as k, nbstream.retrieval; "
        "assert 'numba' not in sys.modules, 'numba imported at module level'; "
        "k.concatenate([np.zeros((2, 2)), np.ones((1, 2))]); "
        "k.group_index(np.array([0, 1, 0])); "
        "assert 'numba' not in sys.modules, 'numba imported for a tiny input'"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_concatenate_mixes_buffers_and_strided_parts(path: str, tmp_path: Path) -> None:
    a = _values(np.random.default_rng(10), 40, (3,), np.float64)
    mm = _memmap(tmp_path, a * 2)
    parts = [a[:5], mm[3:9], a[::3], mm[20:], np.ascontiguousarray(a[7:9]), a[30:]]
    _same(kernels.concatenate(parts), naive.concatenate(parts))


def test_reduction_blocks_grow_with_the_accumulator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each block re-reads the accumulator, so a block is REDUCE_ACC_FACTOR times its bytes,
    within [STREAM_BLOCK_BYTES, REDUCE_BLOCK_BYTES]."""
    monkeypatch.setattr(_numba_config, "STREAM_BLOCK_BYTES", 64)
    monkeypatch.setattr(_numba_config, "REDUCE_BLOCK_BYTES", 4096)
    monkeypatch.setattr(_numba_config, "REDUCE_ACC_FACTOR", 16)
    assert kernels._reduce_block_bytes(1) == 64
    assert kernels._reduce_block_bytes(100) == 1600
    assert kernels._reduce_block_bytes(1000) == 4096
