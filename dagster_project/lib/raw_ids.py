"""The raw ids of an arrival range, as a span that look-ups of the range's rows by raw id can be bounded by.

Fact rows, rejections and element counts point at their raw message by `raw_id`. A look-up of a range's
rows as `raw_id IN (the range's raw ids)` was planned as a scan of the whole fact table joined by hash:
its cost grew with the table, not with the range, so at 5,000 msg/s each run's checks and counts grew
slower by the minute (reconciliation 10 -> 15 s, runs 21 -> 69 s, in the first 20 minutes of an hour, the
table at 6 million rows). Bounded by the span as well, the look-up reads a range of the raw-id index. Raw
ids rise in landing order and a window is landed at once, so a range's ids are one span, or nearly: a
window landed partly earlier (a heal) widens it, which costs time, never a row.

When the span is dense (as many raw messages arrived in the range as the span has ids), the span alone
selects the range's rows and `raw_messages` need not be read at all. Joined with `raw_messages` by raw id
and arrival time instead, fact rows of a table without statistics were planned as a loop that read the
whole arrival range once per fact row: 112 s for the plausibility check of the first 85,000 messages of a
new database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg


@dataclass(frozen=True, slots=True)
class RawIdSpan:
    """The smallest and largest raw id of the raw messages that arrived in [start, end), and how many did."""

    start: datetime
    end: datetime
    lo: int
    hi: int
    messages: int

    @property
    def dense(self) -> bool:
        """Every raw id from `lo` to `hi` arrived in the range (as many messages as ids, which are unique)."""
        return self.messages == self.hi - self.lo + 1

    @property
    def params(self) -> dict[str, object]:
        """The range as `s` and `e`, and the span as `raw_lo` and `raw_hi`, as query parameters."""
        return {"s": self.start, "e": self.end, "raw_lo": self.lo, "raw_hi": self.hi}

    def rows_of(self, alias: str) -> str:
        """An SQL condition that holds for the rows of `alias` (a table with `raw_id`) whose raw message
        arrived in the range; the query passes `params`."""
        span = f"{alias}.raw_id BETWEEN %(raw_lo)s AND %(raw_hi)s"
        if self.dense:
            return span
        return (
            f"{span} AND {alias}.raw_id IN "
            "(SELECT raw_id FROM raw_messages WHERE arrived_at >= %(s)s AND arrived_at < %(e)s)"
        )


def raw_id_span(conn: psycopg.Connection, start: datetime, end: datetime) -> RawIdSpan:
    """The span of the raw ids that arrived in [start, end) (`lo` > `hi` when none did).

    The range's rows are read through the arrival-time key: its cost grows with the range. Asked for the
    plain `min(raw_id)` of the table's rows filtered by arrival, PostgreSQL walks the raw-id index from the
    table's first row until one arrived in the range, as it takes raw id and arrival time for independent:
    it read every older row, 0.33 s at 3.3 million raw messages and growing with them, in every check of
    every run. `OFFSET 0` keeps the range a subquery, which that plan does not apply to.
    """
    row = conn.execute(
        """SELECT coalesce(min(raw_id), 0), coalesce(max(raw_id), -1), count(*) FROM (
               SELECT raw_id FROM raw_messages WHERE arrived_at >= %s AND arrived_at < %s OFFSET 0
           ) AS arrived""",
        (start, end),
    ).fetchone()
    assert row is not None
    return RawIdSpan(start, end, int(row[0]), int(row[1]), int(row[2]))
