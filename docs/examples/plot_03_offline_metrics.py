"""
Recompute metrics offline, per subject
======================================

With the predictions on disk, any metric can be computed after the run, on all windows or
on any subset the metadata can select, without running the model again. Here: balanced
accuracy with torchmetrics, overall and per subject.
"""

# %%
# The classification experiment of the first page (a cache hit if you ran it: exca returns
# its metrics at once).
import tempfile
from pathlib import Path

import nbstream
import numpy as np
import torch
from torchmetrics.classification import MulticlassAccuracy

cache = Path(tempfile.gettempdir()) / "nbstream-guide"
xp = nbstream.Experiment(
    save_test_predictions=True,
    trainer={"accelerator": "cpu", "max_epochs": 2},
    data={"task": "classification", "n_classes": 4, "noise": 6.0},
    model={"name": "linear"},
    infra={"folder": cache},
)
metrics = xp.run()
preds = xp.test_predictions()
y_pred, y_true, metadata = preds["y_pred"], preds["y_true"], preds["metadata"]
print(y_pred.shape, y_true.shape, len(metadata))

# %%
# Balanced accuracy, offline
# --------------------------
# Balanced accuracy is the mean of the per-class recalls (torchmetrics'
# ``MulticlassAccuracy`` with ``average="macro"``). Feeding the metric block by block keeps
# the memory at one block however many windows were saved; ``np.array`` copies each block
# out of the read-only memory map into a tensor torch may own.
offline = MulticlassAccuracy(num_classes=y_pred.shape[1], average="macro")
for start in range(0, len(y_pred), 256):
    block = slice(start, start + 256)
    offline.update(
        torch.from_numpy(np.array(y_pred[block])), torch.from_numpy(np.array(y_true[block]))
    )
balanced_accuracy = offline.compute().item()
print(f"offline:         {balanced_accuracy:.4f}")
print(f"during the test: {metrics['test_balanced_accuracy']:.4f}")
assert abs(balanced_accuracy - metrics["test_balanced_accuracy"]) < 1e-6

# %%
# Per subject
# -----------
# The metadata rows are aligned with the array rows, so ``groupby(...).indices`` gives,
# for each subject, the rows to select. The same works for any column: per recording
# (``timeline``), per stimulus (``group``), or a column you add yourself.
for subject, rows in metadata.groupby("subject_id").indices.items():
    metric = MulticlassAccuracy(num_classes=y_pred.shape[1], average="macro")
    # fancy indexing copies the rows: the tensors own writable memory
    metric.update(torch.from_numpy(y_pred[rows]), torch.from_numpy(y_true[rows]))
    value = metric.compute().item()
    print(f"subject {subject}: balanced accuracy {value:.3f} ({len(rows)} windows)")

# %%
# Plain pandas does as well for metrics that are means over windows: add the per-window
# quantities as columns, then aggregate.
table = metadata.assign(predicted=y_pred.argmax(axis=1), label=np.asarray(y_true)).assign(
    correct=lambda t: t.predicted == t.label
)
print(table.groupby("subject_id")["correct"].mean().rename("accuracy"))
print(table.groupby(["subject_id", "label"])["correct"].mean().unstack("label").round(2))
