"""The raw ids of an arrival range, as a span that look-ups of the range's rows by raw id can be bounded by.

Fact rows, rejections and element counts point at their raw message by `raw_id`. A look-up of a range's
rows as `raw_id IN (the range's raw ids)` was planned as a scan of the whole fact table joined by hash:
its cost grew with the table, not with the range, so at 5,000 msg/s each run's checks and counts grew
slower by the minute (reconciliation 10 -> 15 s, runs 21 -> 69 s, in the first 20 minutes of an hour, the
table at 6 million rows). Bounded by the span as well, the look-up reads a range of the raw-id index. Raw
ids rise in landing order and a window is landed at once, so a range's ids are one span, or nearly: a
window landed partly earlier (a heal) widens it, which costs time, never a row.
"""

from __future__ import annotations

from datetime import datetime

import psycopg


def raw_id_span(conn: psycopg.Connection, start: datetime, end: datetime) -> dict[str, int]:
    """`raw_lo` and `raw_hi`, the smallest and largest raw id that arrived in [start, end) (an empty span
    when none did), as query parameters."""
    row = conn.execute(
        """SELECT coalesce(min(raw_id), 0), coalesce(max(raw_id), -1) FROM raw_messages
           WHERE arrived_at >= %s AND arrived_at < %s""",
        (start, end),
    ).fetchone()
    assert row is not None
    return {"raw_lo": int(row[0]), "raw_hi": int(row[1])}
