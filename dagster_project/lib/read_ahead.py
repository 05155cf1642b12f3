"""An iterator read one item ahead in a thread: the next page of a window is loaded (the database query,
then polars parsing it, both without the GIL) while the caller decodes and stores the current one."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()
_POLL_S = 0.5


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """`items`, each produced in a worker thread while the caller works on the one before; an error in
    producing is raised to the caller at that item. Closing this iterator early (the caller failed) stops
    the worker at its next item."""
    ready: queue.Queue[object] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _offer(ready, item, stop):
                    return
            _offer(ready, _END, stop)
        except BaseException as exc:  # handed to the caller, who raises it
            _offer(ready, exc, stop)

    worker = threading.Thread(target=produce, name="read-ahead", daemon=True)
    worker.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


def _offer(ready: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Put `item` once there is room; False if the caller stopped reading first."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False
