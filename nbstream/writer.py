"""The background writer: takes batches of tensors off the test loop and drains them to a sink.

The main thread's :meth:`Writer.submit` only stages and enqueues:

* a CUDA tensor is copied into a pooled pinned host buffer on a side stream
  (``non_blocking``) and an event is recorded; the compute stream waits on that event, so
  neither the GPU memory nor later in-place kernels can race the copy;
* a CPU tensor whose changes torch tracks is handed over without a copy; its version
  counter is checked at every later submit and at close until it is safely written, so
  an in-place change after the hook raises instead of saving different data;
* a CPU tensor torch cannot track (an inference-mode tensor) is copied into a pooled
  staging buffer, unless the caller said its outputs are never changed in place.

Batches reach the thread through a :class:`~nbstream.mailbox.Mailbox`, which the thread
polls while batches keep coming, so the hook seldom pays for waking it (classification
hook 16.0 -> 6.3 us, retrieval 27.9 -> 16.9 us; loop times unchanged, interleaved).
One thread owns the sink: it waits for each batch's event, calls ``sink(name, tensor)``
for each array (a torch copy into the memmap, GIL released), then the batch's ``then``
callback. A bounded byte budget gives back-pressure: ``submit`` blocks while the bytes in
flight would exceed ``max_inflight_bytes``. The first exception in the thread is kept and
re-raised, as :class:`~nbstream.errors.WriterError` naming the array and batch, at the
next ``submit`` or at ``close``. The thread is started lazily and always joined: by
``close``/``abort``, at interpreter exit, and never inherited by a forked child.

Why one hand-off per batch, even for a few kilobytes of logits: holding batches back to
hand them over in bundles keeps their segment objects alive across several of the test
loop's garbage collections, so they reach the oldest generation and trigger full
collections: with small batches written in the hook and their metadata handed over 16
at a time, ``gc.callbacks`` saw 2-3 full collections of 150-190 ms each per 500-batch
classification epoch (loop/none 1.06 -> 1.44). Bundles of 4-32 batches had slowed the
loop as much before (1.25-1.60), likely for the same reason.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import os
import threading
import typing as tp
import weakref

from nbstream.errors import InPlaceChangeError, WriterError
from nbstream.mailbox import Mailbox

if tp.TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_MAX_INFLIGHT_BYTES", "Writer"]

DEFAULT_MAX_INFLIGHT_BYTES = 512 << 20
Sink = tp.Callable[[str, "torch.Tensor"], None]
# CPU copies up to this size are plain clones (warm heap memory, 0.8 us for a batch of
# logits against 3.4 us through the pool); larger ones reuse pooled buffers, whose pages
# are already faulted in.
_CLONE_MAX_BYTES = 64 << 10

_live_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


@dataclasses.dataclass(slots=True)
class _Batch:
    label: str
    arrays: dict[str, torch.Tensor]
    nbytes: int
    first_row: int
    then: tp.Callable[[], None] | None = None
    event: tp.Any = None  # a torch.cuda.Event when any array came from a GPU
    staged: list[torch.Tensor] | None = None  # pooled buffers to give back once written
    # CPU tensors handed over without a copy: (name, tensor, version when the hook saw it)
    watched: list[tuple[str, torch.Tensor, int]] | None = None
    done: bool = False


class _StagingPool:
    """Reusable host buffers (pinned for GPU copies), so steady state allocates nothing."""

    def __init__(self) -> None:
        self._free: dict[tuple[int, bool], list[torch.Tensor]] = collections.defaultdict(list)
        self._lock = threading.Lock()

    def take(self, like: torch.Tensor, *, pinned: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """A buffer and a view of it with the shape and dtype of ``like``."""
        import torch

        nbytes = like.numel() * like.element_size()
        with self._lock:
            free = self._free[(nbytes, pinned)]
            buffer = free.pop() if free else None
        if buffer is None:
            buffer = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
        return buffer, buffer.view(like.dtype).view(like.shape)

    def give(self, buffer: torch.Tensor) -> None:
        with self._lock:
            self._free[(buffer.numel(), buffer.is_pinned())].append(buffer)

    def clear(self) -> None:
        with self._lock:
            self._free.clear()


class Writer:
    """Drains batches of named tensors to ``sink`` on one background thread.

    ``synchronous=True`` does the same work inline in ``submit`` (for debugging and for the
    conformance tests). ``copy_cpu_outputs``: ``None`` copies only CPU tensors whose
    in-place changes torch cannot detect, ``True`` copies every CPU tensor on the main
    thread, ``False`` trusts the caller never to change a submitted tensor. ``on_idle``
    runs on the thread whenever the queue runs empty.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        synchronous: bool = False,
        max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
        copy_cpu_outputs: bool | None = None,
        on_idle: tp.Callable[[], None] | None = None,
    ) -> None:
        if max_inflight_bytes <= 0:
            raise ValueError(f"max_inflight_bytes must be positive, got {max_inflight_bytes}")
        self._sink = sink
        self._on_idle = on_idle
        self.synchronous = synchronous
        self.max_inflight_bytes = int(max_inflight_bytes)
        self.copy_cpu_outputs = copy_cpu_outputs
        # Which CPU tensors _stage copies (a synchronous writer saves them before returning).
        self._copy_all_cpu = bool(copy_cpu_outputs) and not synchronous
        self._copy_inference = copy_cpu_outputs is None and not synchronous
        self._pool = _StagingPool()
        self._queue: Mailbox[_Batch | None] = Mailbox()
        # The byte budget: the hook takes the plain lock (a C call, no Python frames), and
        # waits on the condition built on it only when the budget is spent.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._inflight = 0
        self._thread: threading.Thread | None = None
        self._error: WriterError | InPlaceChangeError | None = None
        self._watched: list[_Batch] = []  # batches with CPU tensors handed over uncopied
        self._streams: dict[int, tp.Any] = {}
        self._closed = False
        self.rows_submitted = 0
        self.batches_written = 0
        self.bytes_written = 0
        _live_writers.add(self)

    # -- main thread -------------------------------------------------------------------
    def submit(
        self,
        arrays: dict[str, torch.Tensor],
        *,
        label: str,
        then: tp.Callable[[], None] | None = None,
        rows: int | None = None,
    ) -> None:
        """Queue one batch of arrays (rows on dimension 0); returns once they are staged.

        ``rows``: the batch's row count when the caller knows it (saves reading shapes).
        """
        if self._closed:
            raise RuntimeError("this writer is closed; create a new one for a new run")
        if self._error is not None:
            raise self._error
        if self._watched:
            self._check_watched()
        if rows is None:
            rows = min((t.shape[0] for t in arrays.values()), default=0)
        batch = self._stage(arrays, label, then, rows)
        if self.synchronous:
            self._write(batch)
            self._raise_pending()
            return
        with self._lock:
            while self._inflight and self._inflight + batch.nbytes > self.max_inflight_bytes:
                if self._error is not None:
                    break
                self._cond.wait()
            self._inflight += batch.nbytes
        if self._thread is None:
            self._start_thread()
        self._queue.put(batch)

    def close(self) -> None:
        """Write everything queued, join the thread, and raise the thread's error if any."""
        if self._closed:
            return
        self._closed = True
        try:
            self._stop_thread()
            self._check_watched(final=True)
        finally:
            self._pool.clear()
            _live_writers.discard(self)
        self._raise_pending()

    def abort(self) -> None:
        """Stop now: queued batches are dropped, the thread joined, nothing raised."""
        if self._closed:
            return
        self._closed = True
        if self._error is None:
            self._error = WriterError("the writer was aborted")
        self._stop_thread()
        self._watched.clear()
        self._pool.clear()
        _live_writers.discard(self)

    @property
    def inflight_bytes(self) -> int:
        return self._inflight

    def _stage(
        self,
        arrays: dict[str, torch.Tensor],
        label: str,
        then: tp.Callable[[], None] | None,
        rows: int,
    ) -> _Batch:
        # The hot path of every hook: cheap attribute reads only (no .device.type, no
        # detach unless needed; each costs a new Python object), each read once.
        batch = _Batch(label, {}, 0, self.rows_submitted, then)
        self.rows_submitted += rows
        staged = batch.arrays
        nbytes = 0
        for name, tensor in arrays.items():
            if tensor.requires_grad:
                tensor = tensor.detach()
            nbytes += tensor.nbytes
            if tensor.is_cpu:
                untracked = tensor.is_inference()
                if self._copy_all_cpu or (self._copy_inference and untracked):
                    staged[name] = self._copy_cpu(batch, tensor)
                    continue
                staged[name] = tensor
                if not untracked:
                    if batch.watched is None:
                        batch.watched = []
                        self._watched.append(batch)
                    batch.watched.append((name, tensor, tensor._version))
            elif tensor.is_cuda:
                staged[name] = self._stage_cuda(batch, tensor)
            else:
                staged[name] = tensor.cpu()
        batch.nbytes = nbytes
        if batch.event is not None:
            self._protect_compute_stream(batch)
        return batch

    def _copy_cpu(self, batch: _Batch, tensor: torch.Tensor) -> torch.Tensor:
        """A private copy of a CPU tensor: a clone when small, a pooled buffer otherwise."""
        if tensor.nbytes <= _CLONE_MAX_BYTES:
            return tensor.clone()
        buffer, view = self._pool.take(tensor, pinned=False)
        view.copy_(tensor)
        if batch.staged is None:
            batch.staged = []
        batch.staged.append(buffer)
        return view

    def _stage_cuda(self, batch: _Batch, tensor: torch.Tensor) -> torch.Tensor:
        import torch

        if self.synchronous:
            return tensor.cpu()
        device = tensor.device.index or 0
        stream = self._streams.get(device)
        if stream is None:
            stream = self._streams[device] = torch.cuda.Stream(device=device)
        buffer, view = self._pool.take(tensor, pinned=True)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            view.copy_(tensor, non_blocking=True)
        tensor.record_stream(stream)
        if batch.event is None:
            batch.event = torch.cuda.Event()
        batch.event.record(stream)
        if batch.staged is None:
            batch.staged = []
        batch.staged.append(buffer)
        return view

    @staticmethod
    def _protect_compute_stream(batch: _Batch) -> None:
        import torch

        torch.cuda.current_stream().wait_event(batch.event)

    def _check_watched(self, *, final: bool = False) -> None:
        """Raise if a tensor handed over without a copy changed before it was safely written.

        A batch's tensors are released once it was written before an earlier check: any
        change after that point cannot have reached the file.
        """
        still: list[_Batch] = []
        for batch in self._watched:
            written_before = batch.done
            for name, tensor, seen in batch.watched or ():
                version = tensor._version
                if version != seen:
                    self._watched.clear()
                    error = InPlaceChangeError(
                        batch.first_row,
                        f"{name} returned for {batch.label} was changed in place after "
                        f"on_test_batch_end returned (tensor version {seen} -> {version}), "
                        "so the saved rows may not be what the hook saw; return a fresh "
                        "tensor from test_step (e.g. y_pred.clone()) or build the collector "
                        "with copy_cpu_outputs=True",
                    )
                    # kept, so close() reports it too and the caller can keep the intact rows
                    self._error = error
                    raise error
            if written_before or final:
                batch.watched = None
            else:
                still.append(batch)
        self._watched = still

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error

    # -- writer thread -----------------------------------------------------------------
    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._drain, name="nbstream-writer", daemon=True)
        self._thread.start()

    def _stop_thread(self) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        self._thread = None

    def _drain(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            try:
                if self._error is None:
                    self._write(batch)
            finally:
                with self._lock:
                    self._inflight -= batch.nbytes
                    self._cond.notify_all()
            if self._on_idle is not None and self._error is None and self._queue.empty():
                self._run_idle_work()

    def _run_idle_work(self) -> None:
        """Background work while the test loop computes (e.g. flushing to disk early)."""
        assert self._on_idle is not None
        try:
            self._on_idle()
        except BaseException as exc:
            error = WriterError(f"idle work failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._error = error

    def _write(self, batch: _Batch) -> None:
        """Write one batch; record (not raise) the first failure for the caller."""
        step = "waiting for its device-to-host copy"
        try:
            if batch.event is not None:
                batch.event.synchronize()
            for name, tensor in batch.arrays.items():
                step = f"writing {name}"
                self._sink(name, tensor)
            if batch.then is not None:
                step = "recording its metadata"
                batch.then()
            self.batches_written += 1
            self.bytes_written += batch.nbytes
        except BaseException as exc:
            error = WriterError(f"{step} of {batch.label} failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._error = error
        finally:
            batch.done = True
            batch.arrays = {}
            batch.then = None  # lets the batch's segments go now, not at the next check
            for buffer in batch.staged or ():
                self._pool.give(buffer)
            batch.staged = None

    # -- process lifecycle -------------------------------------------------------------
    def _forget_after_fork(self) -> None:
        """In a forked child the thread does not exist: this copy must not wait for it."""
        self._thread = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue = Mailbox()
        self._inflight = 0
        self._watched = []
        self._streams = {}
        self._pool = _StagingPool()
        self._closed = True


def _abort_all_at_exit() -> None:
    for writer in list(_live_writers):
        writer.abort()


def _forget_all_after_fork() -> None:
    for writer in list(_live_writers):
        writer._forget_after_fork()
    _live_writers.clear()


atexit.register(_abort_all_at_exit)
os.register_at_fork(after_in_child=_forget_all_after_fork)
