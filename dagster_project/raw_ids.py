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
    when none did), as query parameters.

    The range's rows are read through the arrival-time key: its cost grows with the range. Asked for the
    plain `min(raw_id)` of the table's rows filtered by arrival, PostgreSQL walks the raw-id index from the
    table's first row until one arrived in the range, as it takes raw id and arrival time for independent:
    it read every older row, 0.33 s at 3.3 million raw messages and growing with them, in every check of
    every run. `OFFSET 0` keeps the range a subquery, which that plan does not apply to.
    """
    row = conn.execute(
        """SELECT coalesce(min(raw_id), 0), coalesce(max(raw_id), -1) FROM (
               SELECT raw_id FROM raw_messages WHERE arrived_at >= %s AND arrived_at < %s OFFSET 0
           ) AS arrived""",
        (start, end),
    ).fetchone()
    assert row is not None
    return {"raw_lo": int(row[0]), "raw_hi": int(row[1])}
