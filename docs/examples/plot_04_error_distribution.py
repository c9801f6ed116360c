"""
Plot the error distribution per subject
=======================================

A mean hides how errors spread: a few badly decoded windows, or one subject unlike the
others. With every window saved, the whole distribution is one plot away. Here: the
voxel-regression experiment of the previous page, the per-window error and correlation of
its 20,484 predicted outputs, per subject.
"""

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import nbstream
import numpy as np

cache = Path(tempfile.gettempdir()) / "nbstream-guide"
xp = nbstream.Experiment(
    save_test_predictions=True,
    trainer={"accelerator": "cpu", "max_epochs": 1},
    data={"task": "voxels", "n_voxels": 20_484, "windows_per_recording": 256, "batch_size": 128},
    infra={"folder": cache},
)
xp.run()  # a cache hit after the previous page
preds = xp.test_predictions()
y_pred, y_true, metadata = preds["y_pred"], preds["y_true"], preds["metadata"]

# %%
# One number per window: its mean squared error and the Pearson correlation between its
# predicted and true outputs, computed a block of rows at a time (the arrays stay on disk).
n = len(y_pred)
mse, corr = np.empty(n), np.empty(n)
for start in range(0, n, 128):
    rows = slice(start, start + 128)
    p, t = np.asarray(y_pred[rows], np.float64), np.asarray(y_true[rows], np.float64)
    mse[rows] = ((p - t) ** 2).mean(axis=1)
    p -= p.mean(axis=1, keepdims=True)
    t -= t.mean(axis=1, keepdims=True)
    corr[rows] = (p * t).sum(axis=1) / np.sqrt((p**2).sum(axis=1) * (t**2).sum(axis=1))
windows = metadata.assign(mse=mse, corr=corr)
print(windows.groupby("subject_id")[["mse", "corr"]].agg(["mean", "median", "std"]).round(3))

# %%
# The distributions, per subject.
subjects = sorted(windows["subject_id"].unique())
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
for ax, column, label in (
    (axes[0], "mse", "mean squared error per window"),
    (axes[1], "corr", "Pearson r per window (20,484 outputs)"),
):
    values = [windows.loc[windows.subject_id == s, column] for s in subjects]
    ax.violinplot(values, showmedians=True)
    ax.set_xticks(range(1, len(subjects) + 1), [f"subject {s}" for s in subjects])
    ax.set_ylabel(label)
    ax.grid(axis="y", alpha=0.3)
fig.suptitle("Test-window errors of the voxel decoder, from the saved predictions")
plt.show()

# %%
# The worst windows, and what they showed: the metadata says which recording and stimulus
# each one came from, so you can go back to the raw data.
print(windows.nlargest(5, "mse")[["timeline", "subject_id", "group", "mse", "corr"]])
print(windows.groupby("group")["corr"].mean().sort_values().head(3).round(3))
