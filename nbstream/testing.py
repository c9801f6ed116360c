"""Light stand-ins for neuralbench's batch objects, for tests, benchmarks and examples.

A neuralbench test batch exposes ``.segments`` (one per window, each with ``.timeline`` and
maybe ``.trigger``) and ``.data`` (a dict that may hold ``"subject_id"``). These dataclasses
have exactly that shape, so the collectors can be driven without neuralbench installed.
"""

from __future__ import annotations

import dataclasses
import typing as tp

__all__ = ["Batch", "FakeTrainer", "Segment", "Trigger", "make_batch"]


@dataclasses.dataclass
class Trigger:
    """The event that starts a segment; the collector reads its group field from it."""

    text: str | None = None
    category: str | None = None
    filepath: str | None = None


@dataclasses.dataclass
class Segment:
    """One window of a recording."""

    timeline: str
    trigger: Trigger | None = None


@dataclasses.dataclass
class Batch:
    """A test batch: the windows' segments and their data (maybe with ``subject_id``)."""

    segments: list[Segment]
    data: dict[str, tp.Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.segments)


@dataclasses.dataclass
class FakeTrainer:
    """The few trainer attributes a collector reads, for driving hooks without Lightning."""

    is_global_zero: bool = True
    num_test_batches: list[int | float] = dataclasses.field(default_factory=list)
    global_rank: int = 0


def make_batch(
    n_windows: int,
    *,
    start: int = 0,
    n_groups: int = 8,
    subject_ids: tp.Any = None,
    timeline: str = "rec",
) -> Batch:
    """A batch of ``n_windows`` segments, triggers named ``stim-<k>`` over ``n_groups`` groups."""
    segments = [
        Segment(
            timeline=f"{timeline}-{(start + i) // 100}",
            trigger=Trigger(text=f"stim-{(start + i) % n_groups:03d}"),
        )
        for i in range(n_windows)
    ]
    data: dict[str, tp.Any] = {}
    if subject_ids is not None:
        data["subject_id"] = subject_ids
    return Batch(segments=segments, data=data)
