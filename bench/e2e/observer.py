"""When rows become queryable: a poller that counts a system's rows, and the latencies that follows.

Why counting instead of reading each row back: a count is cheap for the database under test at any
size, and every system here keeps arrival order (one broker, one subscriber, FIFO queues and windows in
arrival order), so the r-th row to become queryable is the r-th message published. Plain messages are one
row each (`count_rows`); of the simulator's fleet a message may become several rows or a rejection, so
the product's messages are counted by its finished batches instead (`count_messages`): a window's messages
are queryable once its run has committed them. Latency of rank r =
first poll that saw more than r rows - publish time of the r-th message. Resolution: the poll interval,
longer once counting the table takes a while (long sustained runs).
"""

from __future__ import annotations

import bisect
import statistics
import threading
import time
from dataclasses import dataclass, field

import psycopg

POLL_INTERVAL_S = 0.25
#: The poller waits at least this many times as long as its last count took (at most 1/5 of a core).
COUNT_SHARE_INVERSE = 4


def count_rows(table: str) -> str:
    """The query counting a table of one row per message."""
    return f"SELECT count(*) FROM {table}"


def count_messages(probe_topic: str) -> str:
    """The query counting the messages of the product's finished batches (measurements, events and
    rejections alike), less the probes its start published on `probe_topic`, which become rejections."""
    return (
        "SELECT (SELECT coalesce(sum(raw_count), 0) FROM batches WHERE finished_at IS NOT NULL)"
        f" - (SELECT count(*) FROM rejected WHERE topic = '{probe_topic}')"
    )


@dataclass(eq=False)
class RowCounter(threading.Thread):
    """Runs `query` (a count) every POLL_INTERVAL_S until `target`, `stall_s` without progress, or stop()."""

    url: str
    query: str
    target: int
    stall_s: float
    timeline: list[tuple[float, int]] = field(default_factory=list)
    backend_pid: int = 0

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)
        self._halt = threading.Event()
        self._conn = psycopg.connect(self.url, autocommit=True)
        self.backend_pid = int(self._conn.execute("SELECT pg_backend_pid()").fetchone()[0])

    def run(self) -> None:
        last_change = time.time()
        last = -1
        try:
            while not self._halt.is_set():
                asked = time.time()
                count = int(self._conn.execute(self.query).fetchone()[0])
                now = time.time()
                self.timeline.append((now, count))
                if count != last:
                    last, last_change = count, now
                if count >= self.target or now - last_change > self.stall_s:
                    return
                # a count of millions of rows takes a while: the poller stays a small share of the server
                self._halt.wait(max(POLL_INTERVAL_S, COUNT_SHARE_INVERSE * (now - asked)))
        finally:
            self._conn.close()

    def stop(self) -> None:
        self._halt.set()

    @property
    def stored(self) -> int:
        return self.timeline[-1][1] if self.timeline else 0

    @property
    def last_row_at(self) -> float:
        """When the final count was first seen."""
        final = self.stored
        return next(t for t, c in self.timeline if c == final)


@dataclass(frozen=True, slots=True)
class Latencies:
    p50: float
    p95: float
    p99: float
    max: float


def latencies(publish_times: list[float], timeline: list[tuple[float, int]]) -> Latencies | None:
    """Publish-to-queryable latency per row under the arrival-order assumption (module docstring)."""
    counts = [c for _, c in timeline]
    stored = min(counts[-1] if counts else 0, len(publish_times))
    if stored == 0:
        return None
    values = []
    for rank in range(stored):
        seen = bisect.bisect_right(counts, rank)  # first poll with count > rank (counts never fall)
        values.append(timeline[seen][0] - publish_times[rank])
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return Latencies(p50=q[49], p95=q[94], p99=q[98], max=max(values))
