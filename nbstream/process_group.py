"""Tear training's process group down inside every training process, before it exits.

Lightning destroys only NCCL groups (at exit); a gloo group stays alive until the
interpreter's own teardown. A ``ddp_spawn`` worker that exits with it alive can abort in
C++ ("terminate called without an active exception", SIGABRT) after training finished, and
the whole run fails. Releasing the group at the end of ``fit``, once every rank is there,
lets each worker exit cleanly and leaves the caller's process with no group, so the test
that follows runs on one device.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

__all__ = ["ReleaseProcessGroup", "release_process_group"]


def release_process_group() -> bool:
    """Destroy the default process group once every rank reaches this call.

    Returns whether there was a group to destroy; without one (a single device, or a group
    already released) it does nothing.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return False
    dist.barrier()  # no rank tears its end down while another still uses the group
    dist.destroy_process_group()
    return True


class ReleaseProcessGroup(pl.Callback):
    """Release the process group when ``fit`` ends, in each training process."""

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            release_process_group()
