"""``import nbstream`` stays light, and its public names all resolve."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import nbstream

HEAVY = ("torch", "lightning", "lightning.pytorch", "pytorch_lightning", "numba", "pandas")


def _run(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints a JSON object as its last line."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bare_import_is_light() -> None:
    loaded = _run(
        f"""
        import json, sys
        import nbstream
        print(json.dumps(sorted(set({list(HEAVY)!r}) & set(sys.modules))))
        """
    )
    assert loaded == []


def test_errors_import_without_heavy_modules() -> None:
    loaded = _run(
        f"""
        import json, sys
        from nbstream import PredictionsNotFoundError, CorruptPredictionsError, WriterError
        assert issubclass(PredictionsNotFoundError, FileNotFoundError)
        print(json.dumps(sorted(set({list(HEAVY)!r}) & set(sys.modules))))
        """
    )
    assert loaded == []


def test_reading_needs_no_torch(tmp_path) -> None:
    """Reading a predictions folder pulls pandas (the metadata) but never torch or numba."""
    import pandas as pd
    import torch

    from nbstream.store import PredictionStore

    store = PredictionStore(tmp_path, fsync=False)
    store.append("y_pred", torch.ones(2, 3, dtype=torch.bfloat16))
    store.append("y_true", torch.ones(2))
    store.finalize(pd.DataFrame({"timeline": ["a", "b"]}))
    loaded = _run(
        f"""
        import json, sys
        import nbstream
        out = nbstream.read_predictions({str(tmp_path)!r})
        assert out["y_pred"].shape == (2, 3), out["y_pred"].shape
        assert str(out["y_pred"].dtype) == "bfloat16", out["y_pred"].dtype
        print(json.dumps(sorted(set({list(HEAVY)!r}) & set(sys.modules))))
        """
    )
    assert loaded == ["pandas"]


def test_all_names_resolve() -> None:
    assert len(nbstream.__all__) == len(set(nbstream.__all__))
    for name in nbstream.__all__:
        assert getattr(nbstream, name) is not None, name
    assert nbstream.__version__ == "0.1.0"


def test_star_import_gives_all() -> None:
    namespace: dict = {}
    exec("from nbstream import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(nbstream.__all__)


def test_lazy_names_are_the_module_objects() -> None:
    from nbstream.collector import WindowPredictionCollector
    from nbstream.reader import StoppedEarlyWarning, read_predictions

    assert nbstream.read_predictions is read_predictions
    assert nbstream.StoppedEarlyWarning is StoppedEarlyWarning
    assert nbstream.WindowPredictionCollector is WindowPredictionCollector
    assert issubclass(nbstream.StoppedEarlyWarning, UserWarning)


def test_dir_lists_public_api() -> None:
    names = dir(nbstream)
    assert names == sorted(nbstream.__all__)
    assert "read_predictions" in names
    assert "WindowPredictionCollector" in names


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="module 'nbstream' has no attribute 'nope'"):
        _ = nbstream.nope  # type: ignore[attr-defined]
    assert not hasattr(nbstream, "store_things")


def test_error_classes_subclass_builtins() -> None:
    assert issubclass(nbstream.PredictionsNotFoundError, FileNotFoundError)
    assert issubclass(nbstream.IncompletePredictionsError, FileNotFoundError)
    assert issubclass(nbstream.CorruptPredictionsError, ValueError)
    assert issubclass(nbstream.UnsupportedEntryError, ValueError)
    assert issubclass(nbstream.PredictionFormatError, ValueError)
    assert issubclass(nbstream.InPlaceChangeError, nbstream.PredictionFormatError)
    assert issubclass(nbstream.WriterError, RuntimeError)
    error = nbstream.InPlaceChangeError(7, "changed")
    assert error.valid_rows == 7
    assert str(error) == "changed"
