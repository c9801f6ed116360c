"""
Rebuild the retrieval set and score top-k retrieval
===================================================

In a retrieval evaluation each window's predicted embedding is ranked against the
embeddings of all *distinct* stimuli, not against every window: a stimulus shown sixteen
times is one candidate. The saved ``y_true`` has one row per window, so the candidate set
must be rebuilt by de-duplicating it per stimulus. :func:`nbstream.retrieval_set` does
that from the metadata's ``group`` column (the trigger's ``text``), streaming over the
memory maps.
"""

# %%
# A retrieval experiment: 64-d embeddings, 32 stimuli, each shown several times per
# recording.
import tempfile
from pathlib import Path

import nbstream
import numpy as np

cache = Path(tempfile.gettempdir()) / "nbstream-guide"
xp = nbstream.Experiment(
    save_test_predictions=True,
    trainer={"accelerator": "cpu", "max_epochs": 3},
    data={"task": "retrieval", "dim": 64, "n_stimuli": 32, "noise": 4.0, "top_k": 5},
    model={"name": "mlp", "hidden": 128},
    infra={"folder": cache},
)
metrics = xp.run()
print(metrics)
preds = xp.test_predictions()
print("y_pred", preds["y_pred"].shape, "y_true", preds["y_true"].shape)
print(preds["metadata"][["subject_id", "group"]].head(3))

# %%
# The retrieval set
# -----------------
# One target per group, in order of first appearance, with each window's index into it
# (``inverse``): window ``i``'s correct candidate is ``targets[inverse[i]]``.
# ``check=True`` also verifies that every window of a group has the same target (here they
# do; noisy per-window targets would call for ``reduce="mean"``, the default, over
# ``reduce="first"``).
rs = nbstream.retrieval_set(preds, group="group", reduce="first", check=True)
print(f"{len(rs)} candidates, targets {rs.targets.shape}, windows per group {set(rs.counts)}")
print(rs.labels[:5], rs.inverse[:10])
print("groups whose windows disagree:", len(rs.inconsistent))


# %%
# Top-k retrieval
# ---------------
# Cosine similarity of each prediction with every candidate, and the rank of the correct
# one. A block of windows at a time keeps memory at one ``(block, n_candidates)`` matrix.
def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


candidates = unit(rs.targets)
y_pred = preds["y_pred"]
rank = np.empty(len(y_pred), dtype=np.int64)  # 0: the correct stimulus ranks first
for start in range(0, len(y_pred), 256):
    rows = slice(start, start + 256)
    scores = unit(y_pred[rows]) @ candidates.T
    correct = scores[np.arange(scores.shape[0]), rs.inverse[rows]]
    rank[rows] = (scores > correct[:, None]).sum(axis=1)

for k in (1, 5):
    during = metrics[f"test_top{k}"]
    print(f"top-{k}: offline {np.mean(rank < k):.4f}, during the test {during:.4f}")

# %%
# Per subject, and the stimuli retrieved worst: the metadata gives both.
table = preds["metadata"].assign(top1=rank < 1, top5=rank < 5, rank=rank)
print(table.groupby("subject_id")[["top1", "top5"]].mean().round(3))
print(table.groupby("group")["rank"].median().sort_values(ascending=False).head(5))
