"""A first-in first-out hand-off from the test loop to one consumer thread that rarely wakes it.

Why not ``queue.SimpleQueue``: a put to a sleeping consumer wakes it, and the wake (a
futex call and an interrupt to another CPU, dear in a VM) is paid by the putter, inside
the hook: 10-16 us a batch on the benchmark VM, more than everything else the hand-off of a
small batch costs. So while items keep coming the consumer polls on its own timer (the
kernel wakes it, not the putter) and only after ``linger_s`` without an item does it sleep
until a put wakes it, as a plain queue would.
"""

from __future__ import annotations

import collections
import queue
import time
import typing as tp

__all__ = ["Mailbox"]

T = tp.TypeVar("T")

# Between two looks at the mailbox while items keep coming: short enough that a batch
# waits little, long enough that the consumer seldom takes the interpreter lock from the
# test loop (0.5 ms measured worse than 1 ms on a retrieval loop).
POLL_S = 1e-3
# How long the consumer keeps polling after the last item before it sleeps for good.
LINGER_S = 50e-3


class Mailbox(tp.Generic[T]):
    """``put`` from any thread, ``get`` from one consumer thread, in order."""

    def __init__(self, *, poll_s: float = POLL_S, linger_s: float = LINGER_S) -> None:
        self.poll_s = poll_s
        self.linger_s = linger_s
        self._items: collections.deque[T] = collections.deque()
        self._sleeping = False  # the consumer waits on _wake: a put must wake it
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()

    def put(self, item: T) -> None:
        """Add ``item``; wakes the consumer only if it stopped polling."""
        self._items.append(item)
        if self._sleeping:
            self._wake.put(None)

    def get(self) -> T:
        """The oldest item, waiting as long as it takes."""
        items = self._items
        if items:
            return items.popleft()
        deadline = time.monotonic() + self.linger_s
        while time.monotonic() < deadline:
            time.sleep(self.poll_s)  # the interpreter lock is free meanwhile
            if items:
                return items.popleft()
        # Set the flag before the last look: a put after that look sees it and wakes us.
        # A wake left over from an earlier sleep only costs one more look.
        self._sleeping = True
        try:
            while not items:
                self._wake.get()
        finally:
            self._sleeping = False
        return items.popleft()

    def empty(self) -> bool:
        return not self._items
