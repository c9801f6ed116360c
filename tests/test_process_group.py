"""Training's process group is released at the end of ``fit``, in the process that ran it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nbstream.process_group import ReleaseProcessGroup, release_process_group

dist = torch.distributed
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")


@pytest.fixture
def one_rank_group(tmp_path: Path):  # type: ignore[no-untyped-def]
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_release_destroys_the_group_once(one_rank_group: None) -> None:
    assert release_process_group() is True
    assert not dist.is_initialized()
    assert release_process_group() is False  # nothing left to release


def test_callback_releases_only_when_fit_ends(one_rank_group: None) -> None:
    callback = ReleaseProcessGroup()
    for stage in ("validate", "test", "predict"):
        callback.teardown(None, None, stage)  # type: ignore[arg-type]
        assert dist.is_initialized(), stage
    callback.teardown(None, None, "fit")  # type: ignore[arg-type]
    assert not dist.is_initialized()


def test_without_a_group_nothing_happens() -> None:
    assert not dist.is_initialized()
    assert release_process_group() is False
    ReleaseProcessGroup().teardown(None, None, "fit")  # type: ignore[arg-type]
