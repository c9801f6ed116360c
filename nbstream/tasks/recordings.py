"""Synthetic recordings cut into windows: the data of the embedded default task.

A *world* is drawn once from a seed: per-subject channel mixings, a latent time course per
stimulus, a target per stimulus (whatever the task variant asks for) and, per recording,
the order in which its stimuli were presented (each stimulus comes back several times, as
in a real stimulus set). Window ``j`` of recording ``r`` shows stimulus ``s``; its signal is
the stimulus's time course seen through the subject's mixing, plus noise drawn from a
generator seeded by ``(seed, r, j)``, so a window is the same in every process and epoch
without the whole set living in RAM. The last recording of each subject is the test set.

Batches have neuralbench's shape: ``.segments`` (``timeline``, ``trigger.text``) and
``.data`` with ``x``, ``y``, ``subject_id`` and ``stimulus_id``.
"""

from __future__ import annotations

import dataclasses
import typing as tp

import torch
from torch.utils.data import DataLoader, Dataset

from nbstream.testing import Batch, Segment, Trigger

__all__ = ["Recordings", "WindowSet", "collate"]


@dataclasses.dataclass
class Recordings:
    """The drawn world: everything a window is computed from."""

    seed: int
    signals: torch.Tensor  # (n_subjects, n_stimuli, n_channels, n_times), noise-free
    targets: torch.Tensor  # (n_stimuli, *target_shape)
    sequences: torch.Tensor  # (n_subjects, recordings_per_subject, windows_per_recording)
    noise: float
    target_noise: float = 0.0
    batch_size: int = 32

    @property
    def n_stimuli(self) -> int:
        return int(self.signals.shape[1])

    def windows(self, split: tp.Literal["train", "test"]) -> WindowSet:
        n_recordings = self.sequences.shape[1]
        recordings = range(n_recordings - 1) if split == "train" else [n_recordings - 1]
        return WindowSet(self, list(recordings))

    def loader(self, split: tp.Literal["train", "test"], *, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            self.windows(split), batch_size=self.batch_size, shuffle=shuffle, collate_fn=collate
        )


class WindowSet(Dataset):
    """The windows of some recordings of every subject (subject-major, in time order)."""

    def __init__(self, world: Recordings, recordings: list[int]) -> None:
        self.world = world
        n_subjects, _, per_recording = world.sequences.shape
        self.index = [
            (subject, recording, j)
            for subject in range(n_subjects)
            for recording in recordings
            for j in range(per_recording)
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, Segment, int, int]:
        world = self.world
        subject, recording, j = self.index[i]
        stimulus = int(world.sequences[subject, recording, j])
        generator = torch.Generator().manual_seed(
            hash((world.seed, subject, recording, j)) & 0x7FFF_FFFF
        )
        clean = world.signals[subject, stimulus]
        x = clean + world.noise * torch.randn(clean.shape, generator=generator)
        y = world.targets[stimulus]
        if world.target_noise:
            y = y + world.target_noise * torch.randn(y.shape, generator=generator)
        segment = Segment(
            timeline=f"sub-{subject:02d}_run-{recording}",
            trigger=Trigger(text=f"stim-{stimulus:03d}", category="stimulus"),
        )
        return x, y, segment, subject, stimulus


def collate(items: list[tuple[tp.Any, ...]]) -> Batch:
    """Stack windows into a neuralbench-shaped batch."""
    x, y, segments, subjects, stimuli = zip(*items, strict=True)
    return Batch(
        segments=list(segments),
        data={
            "x": torch.stack(x),
            "y": torch.stack(y),
            "subject_id": torch.tensor(subjects),
            "stimulus_id": torch.tensor(stimuli),
        },
    )
