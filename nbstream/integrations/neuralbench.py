"""Make an installed neuralbench save and read ``save_test_predictions`` through nbstream.

neuralbench's ``Experiment`` (module ``neuralbench.main``) adds
``WindowPredictionCollector(folder=uid_folder / "test_predictions")`` to the test trainer
in ``setup_trainer(is_test=True)`` and reads the folder back in ``test_predictions()``.
:func:`install` swaps both, in place, for the running process::

    import nbstream.integrations.neuralbench as nb_adapter
    nb_adapter.install()          # before experiment.run()
    experiment.run()              # the test loop streams to .npy memmaps
    experiment.test_predictions() # read-only memmaps; old CacheDict folders read too

- the ``WindowPredictionCollector`` name that ``neuralbench.main`` looks up becomes
  :class:`nbstream.WindowPredictionCollector` (same constructor, hooks and metadata);
- ``Experiment.test_predictions`` reads through :func:`nbstream.read_predictions`, with
  neuralbench's errors (no cache folder: ``RuntimeError``; nothing saved: ``ValueError``
  saying to set ``save_test_predictions=True``) and an extra ``mmap=True`` argument.

neuralbench itself is untouched on disk; :func:`uninstall` restores the originals. The
uid of cached experiments does not change (nothing in the config does), and a folder
written by the default collector before ``install()`` still reads.
"""

from __future__ import annotations

import importlib
import types
import typing as tp
from pathlib import Path

__all__ = ["install", "installed", "uninstall"]

_DEFAULT_MODULE = "neuralbench.main"
_PREDICTIONS_DIR = "test_predictions"
# module name -> (module, original collector, experiment class, original test_predictions)
_ORIGINALS: dict[str, tuple[types.ModuleType, tp.Any, type, tp.Any]] = {}


def _module(module: str | types.ModuleType) -> types.ModuleType:
    if isinstance(module, types.ModuleType):
        return module
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"cannot import {module} ({exc}); install neuralbench (Python >= 3.12) to use "
            "nbstream.integrations.neuralbench"
        ) from exc


def install(module: str | types.ModuleType = _DEFAULT_MODULE) -> None:
    """Make ``module`` (``neuralbench.main``) save and read test predictions with nbstream.

    Idempotent; call it before ``Experiment.run()`` in the process that runs the test
    (with exca's ``cluster="slurm"``/``"local"``, that is inside the job: see the README).
    """
    from nbstream.collector import WindowPredictionCollector

    target = _module(module)
    if target.__name__ in _ORIGINALS:
        return
    experiment = getattr(target, "Experiment", None)
    missing = [
        name
        for name, found in (
            ("WindowPredictionCollector", hasattr(target, "WindowPredictionCollector")),
            ("Experiment", experiment is not None),
            ("Experiment.test_predictions", hasattr(experiment, "test_predictions")),
        )
        if not found
    ]
    if missing:
        raise RuntimeError(
            f"{target.__name__} has no {', '.join(missing)}: this neuralbench does not match "
            "the adapter (written for neuralbench 0.4); see nbstream's README"
        )
    assert experiment is not None
    _ORIGINALS[target.__name__] = (
        target,
        target.WindowPredictionCollector,
        experiment,
        experiment.__dict__.get("test_predictions"),
    )
    target.WindowPredictionCollector = WindowPredictionCollector  # type: ignore[attr-defined]
    experiment.test_predictions = _test_predictions


def uninstall(module: str | types.ModuleType = _DEFAULT_MODULE) -> None:
    """Restore neuralbench's own collector and reader (no-op if not installed)."""
    name = module if isinstance(module, str) else module.__name__
    saved = _ORIGINALS.pop(name, None)
    if saved is None:
        return
    target, collector, experiment, reader = saved
    target.WindowPredictionCollector = collector  # type: ignore[attr-defined]
    if reader is None:
        delattr(experiment, "test_predictions")
    else:
        experiment.test_predictions = reader  # type: ignore[attr-defined]


def installed(module: str | types.ModuleType = _DEFAULT_MODULE) -> bool:
    """Whether :func:`install` is in effect for ``module``."""
    return (module if isinstance(module, str) else module.__name__) in _ORIGINALS


def _test_predictions(self: tp.Any, mmap: bool = True) -> dict[str, tp.Any]:
    """Raw per-window test predictions, read by nbstream.

    Returns ``{"metadata": DataFrame, "y_true": array, "y_pred": array}``, one row per
    test window; the arrays are read-only memmaps (``mmap=True``) that cost no RAM until
    touched. Read-only: call ``run()`` first (a cache hit is fine); it never starts a run.
    """
    from nbstream.errors import PredictionsNotFoundError
    from nbstream.reader import read_predictions

    uid_folder = self.infra.uid_folder()
    if uid_folder is None:
        raise RuntimeError(
            "Cannot read test predictions without an infra cache folder; configure "
            "``infra.folder``."
        )
    folder = Path(uid_folder) / getattr(self, "_TEST_PREDICTIONS_DIR", _PREDICTIONS_DIR)
    try:
        return read_predictions(folder, mmap=mmap)
    except PredictionsNotFoundError as exc:
        raise ValueError(
            f"Test predictions are unavailable ({exc}). Set save_test_predictions=True and "
            "(re)run the experiment (toggling the flag yields a fresh cache entry)."
        ) from exc
