"""
Convert a folder written by the default collector
=================================================

Folders written by neuralbench's default collector (an exca ``CacheDict``: one chunk per
batch and array, metadata as CSV) keep working: :func:`nbstream.read_predictions` reads
them as they are. Reading one loads the whole arrays into RAM, as the default reader does;
:func:`nbstream.convert_legacy` (or ``nbstream convert SRC``) rewrites it once in nbstream's
layout, after which reads are memory maps.
"""

# %%
# An old folder
# -------------
# To have one, we test a small decoder with a faithful copy of the default collector,
# ``bench.baseline.DefaultCollector`` (in the repository's ``bench/``, not in the package),
# in a plain ``lightning.Trainer``. Its test loop is the embedded classification task's.
import logging
import tempfile
from pathlib import Path

import lightning
import nbstream
import numpy as np
from bench.baseline import DefaultCollector, read_default
from nbstream.tasks import Classification, Linear
from nbstream.tasks.module import Decoder

task = Classification(n_classes=4, noise=6.0)
world = task.build()
decoder = Decoder(Linear(), task, world)  # untrained: only the files matter here

work = Path(tempfile.mkdtemp(prefix="nbstream-convert-"))
old = work / "test_predictions"
trainer = lightning.Trainer(
    accelerator="cpu",
    callbacks=[DefaultCollector(old)],
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
trainer.test(decoder, dataloaders=world.loader("test"), verbose=False)
for path in sorted(p for p in old.rglob("*") if p.is_file()):
    print(f"{path.relative_to(old)!s:<40} {path.stat().st_size:>8,} bytes")

# %%
# Reading it as it is
# -------------------
# The reader recognizes the layout. It gives the same dict as the default reader; the
# arrays are concatenated in RAM (plain ``ndarray``, not memory maps).
legacy = nbstream.read_predictions(old)
reference = read_default(old)
print(type(legacy["y_pred"]).__name__, legacy["y_pred"].shape, legacy["y_true"].shape)
print(
    "same as the default reader:",
    all(np.array_equal(legacy[k], reference[k]) for k in ("y_pred", "y_true")),
    legacy["metadata"].equals(reference["metadata"]),
)

# %%
# Converting
# ----------
# ``convert_legacy`` copies the chunks into one ``.npy`` per array, a 64 MiB block at a
# time (its RAM stays about one block whatever the folder size), writes the metadata as
# Parquet and the manifest last. The result appears complete or not at all, by default next
# to the source as ``<src>-nbstream``; the source is only read.
new = nbstream.convert_legacy(old)
print(new.name, sorted(p.name for p in new.iterdir()))
converted = nbstream.read_predictions(new)
print(type(converted["y_pred"]).__name__, converted["y_pred"].shape)
print(
    "bit-identical:",
    all(np.array_equal(converted[k], legacy[k]) for k in ("y_pred", "y_true")),
    converted["metadata"].equals(legacy["metadata"]),
)

# %%
# From the shell, the same conversion is ``nbstream convert SRC [DST]``:
from nbstream.cli import main as nbstream_command

nbstream_command(["convert", str(old), str(work / "converted"), "--no-progress"])

# %%
# .. note::
#
#    To convert an experiment's predictions in place of the old ones, convert to a new
#    folder, check it, then swap the folders: ``test_predictions()`` reads whichever layout
#    it finds under ``<uid folder>/test_predictions``.
#
#    The CSV metadata of the default collector does not keep dtypes: a group named
#    ``"007"`` comes back as the integer ``7`` from its CSV, and the conversion keeps what
#    the CSV gives. Folders written by nbstream itself store Parquet, where ``"007"`` stays
#    a string.
