"""A row buffer flushed by a background thread every FLUSH_S seconds or at FLUSH_ROWS rows."""

from __future__ import annotations

import threading
from collections.abc import Callable

from bench.e2e.baselines.common import Row

FLUSH_S = 0.5
FLUSH_ROWS = 5_000


class BufferedSink:
    def __init__(self, flush: Callable[[list[Row]], None]) -> None:
        self._flush = flush
        self._rows: list[Row] = []
        self._full = threading.Condition()
        threading.Thread(target=self._loop, daemon=True).start()

    def add(self, row: Row) -> None:
        with self._full:
            self._rows.append(row)
            if len(self._rows) >= FLUSH_ROWS:
                self._full.notify()

    def _loop(self) -> None:
        while True:
            with self._full:
                if len(self._rows) < FLUSH_ROWS:
                    self._full.wait(FLUSH_S)
                rows, self._rows = self._rows, []
            if rows:
                self._flush(rows)
