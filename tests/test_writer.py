"""Conformance suite for the writer: every mode (async thread, synchronous, CUDA) must pass it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from nbstream.errors import InPlaceChangeError, WriterError
from nbstream.writer import Writer


class RecordingSink:
    """A sink that keeps a copy of every array it gets, optionally failing or waiting."""

    def __init__(self, fail_on: tuple[str, int] | None = None) -> None:
        self.calls: list[tuple[str, torch.Tensor]] = []
        self.fail_on = fail_on
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, name: str, tensor: torch.Tensor) -> None:
        self.gate.wait()
        if self.fail_on == (name, len(self.calls)):
            raise OSError(28, "No space left on device")
        self.calls.append((name, tensor.clone()))


MODES = [
    pytest.param({"synchronous": False}, id="async"),
    pytest.param({"synchronous": True}, id="sync"),
    pytest.param(
        {"synchronous": False, "device": "cuda"},
        id="cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    ),
]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> dict:
    return dict(request.param)


def make_writer(mode: dict, sink: RecordingSink, **kwargs) -> Writer:
    options = {k: v for k, v in mode.items() if k != "device"}
    return Writer(sink, **options, **kwargs)


def device(mode: dict) -> str:
    return mode.get("device", "cpu")


def test_batches_arrive_in_order_with_their_callback(mode: dict) -> None:
    sink = RecordingSink()
    writer = make_writer(mode, sink)
    order: list[int] = []
    expected = []
    for i in range(20):
        y_pred = torch.randn(4, 3, device=device(mode))
        y_true = torch.arange(4, device=device(mode)) + i
        expected += [("y_pred", y_pred.cpu()), ("y_true", y_true.cpu())]
        writer.submit(
            {"y_pred": y_pred, "y_true": y_true},
            label=f"batch {i}",
            then=lambda i=i: order.append(i),
        )
    writer.close()
    assert order == list(range(20))
    assert [n for n, _ in sink.calls] == [n for n, _ in expected]
    for (_, got), (_, want) in zip(sink.calls, expected, strict=True):
        assert torch.equal(got, want)
    assert writer.batches_written == 20


def test_dtypes_survive_bit_exact(mode: dict) -> None:
    sink = RecordingSink()
    writer = make_writer(mode, sink)
    arrays = {
        "f16": torch.randn(5, 7).half(),
        "bf16": torch.randn(5, 7).bfloat16(),
        "i64": torch.randint(-9, 9, (5,)),
        "bool": torch.rand(5, 2, 2) > 0.5,
    }
    writer.submit({k: v.to(device(mode)) for k, v in arrays.items()}, label="batch 0")
    writer.close()
    for name, got in sink.calls:
        assert got.dtype == arrays[name].dtype
        assert torch.equal(got.view(torch.uint8), arrays[name].view(torch.uint8))


def test_sink_failure_surfaces_naming_array_and_batch(mode: dict) -> None:
    sink = RecordingSink(fail_on=("y_true", 3))
    writer = make_writer(mode, sink)
    with pytest.raises(WriterError, match=r"writing y_true of batch 1 failed: OSError") as info:
        for i in range(50):
            writer.submit({"y_pred": torch.ones(2), "y_true": torch.ones(2)}, label=f"batch {i}")
        writer.close()
    assert isinstance(info.value.__cause__, OSError)
    writer.abort()  # after a failure, stopping is quiet
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit({"y_pred": torch.ones(1)}, label="late")


def test_failure_in_callback_surfaces(mode: dict) -> None:
    writer = make_writer(mode, RecordingSink())

    def broken() -> None:
        raise ValueError("no timeline")

    with pytest.raises(WriterError, match="recording its metadata of batch 7 failed"):
        writer.submit({"y_pred": torch.ones(2)}, label="batch 7", then=broken)
        writer.close()


def test_close_joins_the_thread_and_is_idempotent(mode: dict) -> None:
    before = {t.name for t in threading.enumerate()}
    writer = make_writer(mode, RecordingSink())
    writer.submit({"y_pred": torch.ones(3)}, label="batch 0")
    writer.close()
    writer.close()
    assert "nbstream-writer" not in {t.name for t in threading.enumerate()} - before


def test_in_place_change_after_hook_is_caught() -> None:
    writer = Writer(RecordingSink(), synchronous=False)
    y_pred = torch.zeros(4, 3)
    writer.submit({"y_pred": y_pred}, label="batch 0")
    y_pred.add_(1)  # the model reuses its output buffer
    with pytest.raises(
        InPlaceChangeError, match=r"y_pred returned for batch 0 was changed in place"
    ) as info:
        writer.submit({"y_pred": torch.zeros(4, 3)}, label="batch 1")
    assert info.value.valid_rows == 0
    writer.abort()


def test_change_after_safe_write_is_fine(mode: dict) -> None:
    sink = RecordingSink()
    writer = make_writer(mode, sink)
    y_pred = torch.zeros(2)
    writer.submit({"y_pred": y_pred}, label="batch 0")
    writer.submit({"y_pred": torch.ones(2)}, label="batch 1")  # check point: batch 0 is safe
    deadline = time.monotonic() + 10
    while writer.batches_written < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    writer.submit({"y_pred": torch.ones(2)}, label="batch 2")  # releases batch 0
    y_pred.add_(5)
    writer.close()
    assert torch.equal(sink.calls[0][1], torch.zeros(2))


@pytest.mark.parametrize("shape", [(8, 5), (200, 100)], ids=["cloned", "pooled"])
def test_inference_tensors_are_copied_so_later_changes_do_not_leak(shape) -> None:
    """Small copies are clones, larger ones (over 64 KiB) go through the staging pool."""
    sink = RecordingSink()
    sink.gate.clear()  # hold the thread so the change happens before the write
    writer = Writer(sink)
    with torch.inference_mode():
        for i in range(3):  # the pool hands a written buffer out again
            y_pred = torch.full(shape, float(i))
            writer.submit({"y_pred": y_pred}, label=f"batch {i}")
            y_pred.fill_(7)
            if i == 0:
                sink.gate.set()
    writer.close()
    assert [float(t[0, 0]) for _, t in sink.calls] == [0.0, 1.0, 2.0]
    assert all(bool((t == t[0, 0]).all()) for _, t in sink.calls)


def test_copy_cpu_outputs_true_copies_every_tensor() -> None:
    sink = RecordingSink()
    sink.gate.clear()
    writer = Writer(sink, copy_cpu_outputs=True)
    y_pred = torch.zeros(3)
    writer.submit({"y_pred": y_pred}, label="batch 0")
    y_pred.fill_(1)
    writer.submit({"y_pred": torch.zeros(3)}, label="batch 1")  # no error: it was copied
    sink.gate.set()
    writer.close()
    assert torch.equal(sink.calls[0][1], torch.zeros(3))


def test_back_pressure_bounds_bytes_in_flight() -> None:
    sink = RecordingSink()
    sink.gate.clear()
    cap = 3 * 4000
    writer = Writer(sink, max_inflight_bytes=cap)
    submitted = threading.Event()
    peak = []

    def produce() -> None:
        for i in range(10):
            writer.submit({"y": torch.ones(1000)}, label=f"batch {i}")  # 4000 bytes each
            peak.append(writer.inflight_bytes)
        submitted.set()

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.3)
    assert not submitted.is_set(), "submit must block while the disk is stalled"
    assert writer.inflight_bytes <= cap
    sink.gate.set()
    producer.join(timeout=30)
    writer.close()
    assert submitted.is_set() and max(peak) <= cap
    assert len(sink.calls) == 10


def test_one_batch_larger_than_the_budget_still_passes() -> None:
    sink = RecordingSink()
    writer = Writer(sink, max_inflight_bytes=16)
    writer.submit({"y": torch.ones(1000)}, label="batch 0")
    writer.submit({"y": torch.ones(1000)}, label="batch 1")
    writer.close()
    assert len(sink.calls) == 2


def test_abort_drops_queued_batches_and_joins() -> None:
    sink = RecordingSink()
    sink.gate.clear()
    writer = Writer(sink)
    for i in range(5):
        writer.submit({"y": torch.ones(10)}, label=f"batch {i}")
    threading.Timer(0.2, sink.gate.set).start()
    writer.abort()
    assert len(sink.calls) <= 1


def test_invalid_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="max_inflight_bytes must be positive, got 0"):
        Writer(RecordingSink(), max_inflight_bytes=0)


def test_interpreter_exit_without_close_does_not_hang() -> None:
    code = (
        "import torch, time\n"
        "from nbstream.writer import Writer\n"
        "def slow(name, t): time.sleep(0.05)\n"
        "w = Writer(slow)\n"
        "for i in range(20): w.submit({'y': torch.ones(10)}, label=str(i))\n"
        "print('exiting')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "exiting" in out.stdout


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_does_not_inherit_the_thread() -> None:
    writer = Writer(RecordingSink())
    writer.submit({"y": torch.ones(3)}, label="batch 0")
    pid = os.fork()
    if pid == 0:  # child: the copy must be inert, and exiting must not wait on a thread
        try:
            writer.close()
            os._exit(0 if writer._thread is None else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    writer.close()


def test_idle_work_runs_when_the_queue_empties_and_its_failure_surfaces() -> None:
    calls: list[int] = []
    writer = Writer(RecordingSink(), on_idle=lambda: calls.append(1))
    writer.submit({"y": torch.ones(3)}, label="batch 0")
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.001)
    writer.close()
    assert calls, "the thread must run idle work after draining the queue"

    def broken() -> None:
        raise OSError(5, "Input/output error")

    writer = Writer(RecordingSink(), on_idle=broken)
    writer.submit({"y": torch.ones(3)}, label="batch 0")
    while writer._error is None and time.monotonic() < deadline + 10:
        time.sleep(0.001)
    with pytest.raises(WriterError, match="idle work failed: OSError"):
        writer.close()


def test_a_written_batch_lets_go_of_its_callback(mode: dict) -> None:
    """The callback holds the batch's segments: they must not wait for the next submit."""
    import functools
    import weakref

    class Segments:
        pass

    segments = Segments()
    alive = weakref.ref(segments)
    writer = make_writer(mode, RecordingSink())
    y = torch.ones(4, 2, device=device(mode))  # a CPU tensor stays watched until a later check
    writer.submit({"y": y}, label="batch 0", then=functools.partial(len, [segments]))
    del segments
    deadline = time.monotonic() + 10
    while writer.batches_written < 1 and time.monotonic() < deadline:
        time.sleep(1e-3)
    assert writer.batches_written == 1
    assert alive() is None
    writer.close()
