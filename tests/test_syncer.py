"""Tests of nbstream.syncer: background fdatasync, coalesced, failures raised, always joined."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from nbstream.syncer import BackgroundSync


class _Recorder:
    """Stands in for os.fdatasync: records fds, can hold the thread or fail."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, fd: int) -> None:
        self.entered.set()
        self.gate.wait(10)
        self.calls.append(fd)
        if self.fail:
            raise OSError(errno.EIO, os.strerror(errno.EIO))


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_requests_are_synced_and_close_joins_the_thread(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "a.bin", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"x" * 4096)
        syncer = BackgroundSync()
        syncer.request(fd, "a.bin")
        syncer.wait()
        assert "nbstream-fdatasync" in _threads()
        syncer.close()
        assert "nbstream-fdatasync" not in _threads()
    finally:
        os.close(fd)


def test_requests_for_one_file_coalesce(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(os, "fdatasync", recorder)
    recorder.gate.clear()
    syncer = BackgroundSync()
    syncer.request(3, "first")  # the thread takes it and waits on the gate
    assert recorder.entered.wait(10)
    for _ in range(5):
        syncer.request(4, "second")  # queued once
    syncer.request(5, "third")
    recorder.gate.set()
    syncer.close()
    assert recorder.calls == [3, 4, 5]


def test_a_failed_sync_is_raised_naming_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fdatasync", _Recorder(fail=True))
    syncer = BackgroundSync()
    syncer.request(3, "y_pred.npy.partial")
    with pytest.raises(OSError, match=r"writing y_pred.npy.partial to the disk failed") as info:
        syncer.wait()
    assert info.value.errno == errno.EIO
    with pytest.raises(OSError, match=r"y_pred\.npy\.partial"):
        syncer.request(3, "y_pred.npy.partial")
    with pytest.raises(OSError, match=r"y_pred\.npy\.partial"):
        syncer.close()
    assert "nbstream-fdatasync" not in _threads()


def test_close_without_requests_and_requests_after_close() -> None:
    syncer = BackgroundSync()
    syncer.close()  # no thread was started
    with pytest.raises(RuntimeError, match="closed"):
        syncer.request(3, "late")


def test_an_unexpected_error_is_kept_and_the_thread_keeps_serving(monkeypatch) -> None:
    """Anything raised by the sync becomes the caller's error; waiting never hangs."""

    def broken(fd: int) -> None:
        raise ValueError("bad file descriptor state")

    monkeypatch.setattr(os, "fdatasync", broken)
    syncer = BackgroundSync()
    syncer.request(3, "y_true.npy.partial")
    with pytest.raises(OSError, match=r"y_true\.npy\.partial.*ValueError"):
        syncer.wait()
    with pytest.raises(OSError):
        syncer.close()
    assert "nbstream-fdatasync" not in _threads()
