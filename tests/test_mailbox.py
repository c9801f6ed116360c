"""The mailbox hands items over in order, polling while they come and sleeping after."""

from __future__ import annotations

import threading
import time

import pytest

from nbstream.mailbox import Mailbox


def consume(box: Mailbox[int | None], out: list[int]) -> threading.Thread:
    def run() -> None:
        while (item := box.get()) is not None:
            out.append(item)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("linger_s", [0.0, 0.05], ids=["sleeps-at-once", "polls"])
def test_every_item_arrives_once_in_order(linger_s: float) -> None:
    box: Mailbox[int | None] = Mailbox(poll_s=1e-4, linger_s=linger_s)
    out: list[int] = []
    thread = consume(box, out)
    for i in range(2_000):
        box.put(i)
        if i % 97 == 0:
            time.sleep(1e-3)  # let the consumer run dry, poll, or fall asleep
    box.put(None)
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert out == list(range(2_000))
    assert box.empty()


def test_a_sleeping_consumer_is_woken_by_a_put() -> None:
    box: Mailbox[int | None] = Mailbox(poll_s=1e-3, linger_s=0.01)
    out: list[int] = []
    thread = consume(box, out)
    deadline = time.monotonic() + 5
    while not box._sleeping and time.monotonic() < deadline:
        time.sleep(1e-3)
    assert box._sleeping  # stopped polling after linger_s
    box.put(7)
    box.put(None)
    thread.join(timeout=5)
    assert out == [7] and not thread.is_alive()


def test_a_polling_consumer_takes_items_without_a_wake() -> None:
    box: Mailbox[int | None] = Mailbox(poll_s=1e-3, linger_s=60)
    out: list[int] = []
    thread = consume(box, out)
    box.put(1)
    deadline = time.monotonic() + 5
    while not out and time.monotonic() < deadline:
        time.sleep(1e-3)
    box.put(None)
    thread.join(timeout=5)
    assert out == [1]
    assert box._wake.empty()  # never woken: the puts found it polling
