"""
Caveats
=======

What saving every test window costs, and the rules the collector follows. Most of this page
is text; the short runs show the behaviours it describes.
"""

# %%
# Disk use
# --------
# Every window costs its ``y_pred`` and ``y_true`` rows, uncompressed, plus a few dozen
# bytes of metadata. For fMRI-sized outputs this adds up quickly: measure it on a small run
# and multiply. Here, the voxel experiment of the earlier pages (20,484 float32 outputs per
# window):
import json
import tempfile
import warnings
from pathlib import Path

import nbstream

cache = Path(tempfile.gettempdir()) / "nbstream-guide"
xp = nbstream.Experiment(
    save_test_predictions=True,
    trainer={"accelerator": "cpu", "max_epochs": 1},
    data={"task": "voxels", "n_voxels": 20_484, "windows_per_recording": 256, "batch_size": 128},
    infra={"folder": cache},
)
xp.run()  # a cache hit after the earlier pages
folder = xp.infra.uid_folder() / "test_predictions"
manifest = json.loads((folder / "manifest.json").read_text())
on_disk = sum(p.stat().st_blocks * 512 for p in folder.iterdir())
per_window = on_disk / manifest["n_windows"]
print(
    f"{manifest['n_windows']} windows: {on_disk / 1e6:.1f} MB on disk, "
    f"{per_window / 1e3:.0f} kB per window"
)
for n in (10_000, 100_000, 1_000_000):
    print(f"{n:>9,} windows -> {n * per_window / 1e9:7.1f} GB")

# %%
# Plan the space before a long test (the collector preallocates as it grows, so a full
# disk fails with ``OSError`` when a file grows, not with a crash inside a page fault), and
# cast outputs you do not need in full precision in ``test_step`` (``y_pred.half()``;
# bfloat16 is stored bit-exact). The cache folder is yours to clean: exca keeps every
# entry.
#
# What memory-map reads cost when you touch every page
# ----------------------------------------------------
# A memory map makes opening free, not reading. A pass over all rows (a metric over every
# window, ``y_pred.mean()``, ``np.array(y_pred)``) reads the whole file from the disk once,
# at the disk's speed; a second pass is fast only while the file still fits in the page
# cache. The pages it maps count in the process's ``RssFile`` (see the page on reading):
# they are shared, clean and reclaimable, so they do not push the machine into swap, but
# tools that report plain RSS will show them. So:
#
# * compute in blocks of rows (as the earlier pages do), and combine per-block results;
#   ``np.array(y_pred)`` or ``torch.tensor(y_pred)`` copies everything into private RAM;
# * select rows through the metadata first (one subject, one stimulus), then read them;
# * on network file systems, where each page fault is a round trip, copy the folder to a
#   local disk before many passes over it.
#
# Copies on the test loop's thread
# --------------------------------
# ``trainer.test`` runs ``test_step`` under ``torch.inference_mode()`` by default. torch
# does not track in-place changes of inference tensors (they have no version counter), so
# nbstream cannot prove that a CPU output it was handed is not modified later by your code:
# it copies such outputs once, on the main thread, into a pooled staging buffer, before the
# hook returns. That is one ``memcpy`` per batch. Outputs created outside inference mode are
# handed over without a copy, and their version counters are checked until written (an
# in-place change raises :class:`nbstream.InPlaceChangeError` instead of saving other
# values). ``WindowPredictionCollector(copy_cpu_outputs=False)`` skips the copy when you
# promise never to change returned tensors; ``True`` always copies. CUDA outputs are copied
# to pinned host memory on a side stream, never on the main thread.
#
# Flushing to the disk at epoch end
# ---------------------------------
# With ``fsync=True`` (the default) the files are flushed to the disk while the writer is
# idle and, for the rest, when the test epoch ends, so ``on_test_epoch_end`` returns once
# every byte is durable; on a slow disk that wait is part of the test's wall time.
# ``fsync=False`` returns as soon as the data is in the kernel's page cache: once the run
# has ended, a crash of the process loses nothing, but a power failure might.
#
# A dedicated folder, cleared at each test epoch
# ----------------------------------------------
# Like the default collector, nbstream empties its folder when a test epoch starts: each
# ``trainer.test`` replaces the previous predictions (use one folder per test call to keep
# several). Clearing refuses to delete files no collector wrote, so a folder shared with
# other files is an error before anything is removed:
from nbstream.demo import Regressor, loader, make_trainer

shared = Path(tempfile.mkdtemp(prefix="nbstream-caveats-"))
(shared / "notes.txt").write_text("my notes")
trainer = make_trainer(callbacks=[nbstream.WindowPredictionCollector(shared)])
try:
    trainer.test(Regressor(), dataloaders=loader(64), verbose=False)
except FileExistsError as error:
    print(f"FileExistsError: {error}")
print("notes kept:", (shared / "notes.txt").exists())


# %%
# Interrupted runs
# ----------------
# If the test loop raises, the collector still publishes every window written before the
# error, marked ``status: "stopped"``, and the reader warns
# (:class:`nbstream.StoppedEarlyWarning`). A process killed before the end leaves no
# manifest, and reading the folder raises :class:`nbstream.IncompletePredictionsError`
# instead of returning half-written arrays.
class Failing(Regressor):
    def test_step(self, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 3:
            raise RuntimeError("out of memory (simulated)")
        return super().test_step(batch, batch_idx, dataloader_idx)


stopped = Path(tempfile.mkdtemp(prefix="nbstream-caveats-")) / "test_predictions"
trainer = make_trainer(callbacks=[nbstream.WindowPredictionCollector(stopped)])
try:
    trainer.test(Failing(), dataloaders=loader(64, batch_size=8), verbose=False)
except RuntimeError as error:
    print(f"the test raised: {error}")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", nbstream.StoppedEarlyWarning)
    kept = nbstream.read_predictions(stopped)
print(f"{len(kept['metadata'])} windows kept (batches 0-2)")
print(f"{caught[0].category.__name__}: {caught[0].message}")

(stopped / "manifest.json").unlink()  # as if the process had been killed
try:
    nbstream.read_predictions(stopped)
except nbstream.IncompletePredictionsError as error:
    print(f"IncompletePredictionsError: {error}")
