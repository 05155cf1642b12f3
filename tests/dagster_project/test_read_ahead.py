"""Reading one item ahead in a thread: same items in the same order, an error raised at its item, and a
caller that stops early stops the worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from dagster_project.lib.read_ahead import read_ahead


def slow(n: int, fail_at: int | None = None) -> Iterator[int]:
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"item {i} could not be read")
        time.sleep(0.01)
        yield i


def workers() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "read-ahead")


def test_items_come_in_order_and_the_next_is_read_while_the_caller_works() -> None:
    produced: list[float] = []

    def stamped() -> Iterator[int]:
        for i in range(4):
            produced.append(time.monotonic())
            yield i

    seen = []
    for item in read_ahead(stamped()):
        seen.append(item)
        time.sleep(0.2)  # the caller's work on the item
        if item < 3:
            assert len(produced) >= item + 2, "the next item was produced while the caller worked"
    assert seen == [0, 1, 2, 3]
    assert workers() == 0


def test_an_error_in_reading_is_raised_at_its_item() -> None:
    seen = []
    with pytest.raises(ValueError, match="item 3"):
        for item in read_ahead(slow(10, fail_at=3)):
            seen.append(item)
    assert seen == [0, 1, 2]
    assert workers() == 0


def test_a_caller_that_stops_early_stops_the_worker() -> None:
    items = read_ahead(slow(1000))
    assert next(items) == 0
    items.close()
    assert workers() == 0
