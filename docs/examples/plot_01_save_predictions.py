"""
Turn on ``save_test_predictions``
=================================

One flag makes an experiment keep every test window's prediction, target and metadata.
This page sets it in Python and in YAML, then looks at what lands on disk.
"""

# %%
# In Python
# ---------
# :class:`nbstream.Experiment` is a pydantic config run and cached by exca, as in
# neuralbench. ``save_test_predictions=True`` adds nbstream's collector to the test
# trainer; the predictions go next to exca's cache entry, so the experiment needs a cache
# folder (``infra={"folder": ...}``; without one, ``run()`` raises an error that says so).
# Here: a 4-class decoder of synthetic recordings, trained for two epochs on the CPU.
import json
import pprint
import tempfile
import time
from pathlib import Path

import nbstream

cache = Path(tempfile.gettempdir()) / "nbstream-guide"  # any folder: exca's cache

xp = nbstream.Experiment(
    save_test_predictions=True,
    trainer={"accelerator": "cpu", "max_epochs": 2},
    data={"task": "classification", "n_classes": 4, "noise": 6.0},
    model={"name": "linear"},
    infra={"folder": cache},
)
start = time.perf_counter()
metrics = xp.run()  # trains, tests, saves the test predictions
print(f"ran in {time.perf_counter() - start:.1f} s")
print(metrics)

# %%
# In YAML
# -------
# The same config as a YAML file, the way ``nbstream run xp.yaml`` (or your own launcher)
# reads it. It validates into the same experiment, with the same exca uid: ``run()`` is a
# cache hit and returns at once, without training.
import yaml

config = """
save_test_predictions: true
trainer: {accelerator: cpu, max_epochs: 2}
data: {task: classification, n_classes: 4, noise: 6.0}
model: {name: linear}
infra: {folder: CACHE}
""".replace("CACHE", str(cache))
(cache / "xp.yaml").write_text(config)

same = nbstream.Experiment.model_validate(yaml.safe_load(config))
start = time.perf_counter()
assert same.run() == metrics
print(f"cache hit in {time.perf_counter() - start:.3f} s")
print("same uid folder:", same.infra.uid_folder() == xp.infra.uid_folder())

# %%
# From the shell, the same file runs with ``nbstream run``. It prints the test metrics,
# where the predictions are, and a summary read back from the memory maps (here again a
# cache hit).
from nbstream.cli import main as nbstream_command

nbstream_command(["run", str(cache / "xp.yaml")])

# %%
# The flag is part of the cache key: the same experiment without it is another exca
# entry, in another folder, and switching the flag on later never overwrites the results
# you already have.
off = nbstream.Experiment.model_validate({**yaml.safe_load(config), "save_test_predictions": False})
print("flag off, other uid folder:", off.infra.uid_folder() != xp.infra.uid_folder())

# %%
# What is saved
# -------------
# The predictions live in ``<uid folder>/test_predictions/``: two standard NPY files, one
# Parquet table and a manifest.
folder = xp.infra.uid_folder() / "test_predictions"
for path in sorted(folder.iterdir()):
    print(f"{path.name:<18} {path.stat().st_size:>9,} bytes")

# %%
# ``manifest.json`` is written last, atomically: a folder without it is an interrupted run,
# and the reader says so instead of returning half-written arrays. It names each array's
# file, dtype and shape (each task keeps its native ones: class logits here, voxel vectors,
# embeddings or CTC log-probabilities elsewhere), the window count and the metadata
# columns.
pprint.pprint(json.loads((folder / "manifest.json").read_text()), sort_dicts=False, width=90)

# %%
# The metadata has one row per window, aligned with the rows of ``y_pred`` and ``y_true``:
#
# ``timeline``
#     the recording the window was cut from (``segment.timeline``);
# ``batch_idx``, ``dataloader_idx``
#     where the test loop met it;
# ``subject_id``
#     ``batch.data["subject_id"]``, when every batch has it;
# ``group``
#     the stimulus: the trigger's ``text`` (then ``category``, then ``filepath``), when
#     every window has one. Windows of the same stimulus share it (the retrieval set is
#     built on it).
preds = xp.test_predictions()  # read-only memmaps; never starts a run
print(preds["metadata"].head())
print(preds["metadata"].dtypes)
print("y_pred", preds["y_pred"].dtype, preds["y_pred"].shape, type(preds["y_pred"]).__name__)
print("y_true", preds["y_true"].dtype, preds["y_true"].shape, type(preds["y_true"]).__name__)

# %%
# ``nbstream show`` prints the same summary for any predictions folder (an experiment's uid
# folder works too), including folders written by the default collector.
nbstream_command(["show", str(folder), "--head", "3"])
