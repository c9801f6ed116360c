"""
Read predictions back without loading them into RAM
===================================================

Saved predictions can be much larger than RAM: a million windows of fsaverage5-sized
fMRI predictions (20,484 float32 values each) are 82 GB per array. nbstream reads them
back as read-only memory maps: opening costs nothing, and only the rows you touch are
read from disk.
"""

# %%
# A voxel-regression experiment: 1,024 test windows of 20,484 outputs (fsaverage5 size),
# so ``y_pred`` and ``y_true`` are 84 MB each.
import tempfile
from pathlib import Path

import nbstream
import numpy as np

cache = Path(tempfile.gettempdir()) / "nbstream-guide"
xp = nbstream.Experiment(
    save_test_predictions=True,
    trainer={"accelerator": "cpu", "max_epochs": 1},
    data={"task": "voxels", "n_voxels": 20_484, "windows_per_recording": 256, "batch_size": 128},
    infra={"folder": cache},
)
print(xp.run())
folder = xp.infra.uid_folder() / "test_predictions"


# %%
# How much RAM a read costs
# -------------------------
# Linux reports a process's resident memory in ``/proc/self/status``: ``RssAnon`` is
# private memory (what ``np.load`` without a memory map or ``np.concatenate`` fill),
# ``RssFile`` the file pages currently mapped, which the kernel can drop and read again at
# any time.
def rss_mb() -> dict[str, float]:
    status = Path("/proc/self/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("RssAnon", "RssFile")}


def report(what: str, before: dict[str, float]) -> None:
    after = rss_mb()
    grew = ", ".join(f"{k} {after[k] - before[k]:+7.1f} MB" for k in after)
    print(f"{what:<44} {grew}")


nbstream.read_predictions(folder)  # once, so that pyarrow's own code is loaded before we measure
before = rss_mb()
preds = nbstream.read_predictions(folder)  # what xp.test_predictions() returns
report("read_predictions(folder)", before)
y_pred, y_true, metadata = preds["y_pred"], preds["y_true"], preds["metadata"]
print(type(y_pred).__name__, y_pred.dtype, y_pred.shape, f"{y_pred.nbytes / 1e6:.0f} MB")

# %%
# Opening touched nothing (the metadata table is the only thing read). Reading some rows
# maps only those pages: here the windows of one subject, selected through the metadata.
# Fancy indexing copies them into private memory, as numpy always does.
before = rss_mb()
rows = np.flatnonzero(metadata["subject_id"].to_numpy() == 2)
subject_2 = y_pred[rows]  # a copy of 256 rows (21 MB)
report("y_pred[rows of subject 2]  (copy, 21 MB)", before)
del subject_2

# %%
# Streaming over all rows in blocks keeps the private memory at one block. The file pages
# it maps show up in ``RssFile``: they are the page cache, shared and reclaimable, not
# memory your process owns (see the caveats page).
before = rss_mb()
sq_err = np.zeros(len(y_pred))
for start in range(0, len(y_pred), 128):
    block = slice(start, start + 128)
    sq_err[block] = ((y_pred[block] - y_true[block]) ** 2).mean(axis=1)
report("per-window MSE over every row, 128 at a time", before)
print(f"mean MSE {sq_err.mean():.3f}")

# %%
# For comparison, ``mmap=False`` loads both arrays into private memory, as the default
# collector's reader (``np.concatenate`` of its chunks) always does.
before = rss_mb()
in_ram = nbstream.read_predictions(folder, mmap=False)
report("read_predictions(folder, mmap=False)", before)
del in_ram

# %%
# Without nbstream
# ----------------
# The arrays are standard NPY files, so any tool that reads NPY opens them, e.g. numpy
# alone. The metadata is a Parquet table (pandas, pyarrow, polars, DuckDB...).
import pandas as pd

y_pred_np = np.load(folder / "y_pred.npy", mmap_mode="r")
meta_np = pd.read_parquet(folder / "metadata.parquet")
print(type(y_pred_np).__name__, y_pred_np.shape, y_pred_np.dtype)
print("same values:", np.array_equal(y_pred_np[:8], y_pred[:8]))
print("same metadata:", meta_np.equals(metadata))

# %%
# .. note::
#
#    The memory maps are read-only. ``torch.from_numpy`` warns on them (torch tensors are
#    writable); copy the rows you need (``np.array(y_pred[block])``) or pass them to numpy
#    functions, which never write to their inputs.
