"""An hour's totals: what became of the raw messages that arrived in it, the lag of its batches, and
which hours have a summary written."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from dagster_project.lib.raw_ids import raw_id_span
from dagster_project.lib.verdicts import ReadFrom, judged_so_far
from dagster_project.lib.windows import partition_window


@dataclass(frozen=True, slots=True)
class HourCounts:
    """What became of the raw messages that arrived in a range: totals that add up over disjoint ranges
    (a `verdicts.Partial`), so a micro-batch run counts only its own range and the hour-closing run does
    not read the whole hour again."""

    raw_messages: int
    measurements: int
    events: int
    rejected: int  # rejections that are not redeliveries
    duplicates: int
    reject_reasons: dict[str, int]  # every rejection by reason, duplicates included

    def totals(self) -> dict[str, Any]:
        return {
            "raw_messages": self.raw_messages,
            "measurements": self.measurements,
            "events": self.events,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "reject_reasons": self.reject_reasons,
        }

    def plus(self, totals: dict[str, Any]) -> HourCounts:
        """These counts and those of the range before (`totals()` of it); reasons by count, then name."""
        reasons = Counter(totals["reject_reasons"]) + Counter(self.reject_reasons)
        return HourCounts(
            self.raw_messages + totals["raw_messages"],
            self.measurements + totals["measurements"],
            self.events + totals["events"],
            self.rejected + totals["rejected"],
            self.duplicates + totals["duplicates"],
            dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0]))),
        )


def hour_counts(conn: psycopg.Connection, start: datetime, end: datetime) -> HourCounts:
    """The counts of the raw messages that arrived in [start, end), from the tables (exact however many
    runs wrote them)."""
    row = conn.execute(
        """WITH r AS (SELECT raw_id FROM raw_messages WHERE arrived_at >= %(s)s AND arrived_at < %(e)s)
           SELECT (SELECT count(*) FROM r),
                  (SELECT count(*) FROM measurements
                   WHERE raw_id BETWEEN %(raw_lo)s AND %(raw_hi)s AND raw_id IN (SELECT raw_id FROM r)),
                  (SELECT count(*) FROM events
                   WHERE raw_id BETWEEN %(raw_lo)s AND %(raw_hi)s AND raw_id IN (SELECT raw_id FROM r)),
                  (SELECT count(*) FROM rejected WHERE arrived_at >= %(s)s AND arrived_at < %(e)s
                                                   AND stage <> 'duplicate'),
                  (SELECT count(*) FROM rejected WHERE arrived_at >= %(s)s AND arrived_at < %(e)s
                                                   AND stage = 'duplicate')""",
        raw_id_span(conn, start, end).params,
    ).fetchone()
    assert row is not None
    reasons = conn.execute(
        """SELECT reason, count(*) FROM rejected WHERE arrived_at >= %s AND arrived_at < %s
           GROUP BY reason ORDER BY count(*) DESC, reason""",
        (start, end),
    ).fetchall()
    return HourCounts(*map(int, row), reject_reasons={reason: int(n) for reason, n in reasons})


def hour_summary(
    conn: psycopg.Connection, start: datetime, end: datetime, counts: HourCounts | None = None
) -> dict[str, object]:
    """The totals of one arrival hour: `counts` of it (read from the tables when None), and the lag of
    the batches that filled it (the age of each batch's oldest message when it finished)."""
    if counts is None:
        counts = hour_counts(conn, start, end)
    lag = conn.execute(
        """SELECT count(*), extract(epoch FROM max(finished_at - coalesce(oldest_arrival, range_end))),
                  extract(epoch FROM avg(finished_at - coalesce(oldest_arrival, range_end)))
           FROM batches WHERE range_start >= %s AND range_end <= %s AND finished_at IS NOT NULL""",
        (start, end),
    ).fetchone()
    assert lag is not None
    return {
        **counts.totals(),
        "batches": int(lag[0]),
        "lag_max_s": round(float(lag[1]), 3) if lag[1] is not None else None,
        "lag_avg_s": round(float(lag[2]), 3) if lag[2] is not None else None,
    }


def summarised(conn: psycopg.Connection, keys: list[str]) -> dict[str, datetime]:
    """Hour partition key -> when its latest summary was written, for those of `keys` that have one."""
    rows = conn.execute(
        "SELECT partition_key, summarised_at FROM summarised_hours WHERE partition_key = ANY(%s)", (keys,)
    ).fetchall()
    return dict(rows)


def mark_summarised(conn: psycopg.Connection, key: str) -> None:
    conn.execute(
        """INSERT INTO summarised_hours (partition_key) VALUES (%s)
           ON CONFLICT (partition_key) DO UPDATE SET summarised_at = now()""",
        (key,),
    )


HOUR_COUNTS = "hour_counts"


def counted_so_far(conn: psycopg.Connection, key: str, end: datetime) -> tuple[HourCounts, ReadFrom]:
    """The counts of hour partition `key` up to `end`, and where they began to be read: only what
    follows the counts an earlier run of the hour kept, while they still hold (see `verdicts`); these are
    kept in turn for the next run. `conn` must be fresh."""
    start = partition_window(key).utc_bounds[0]
    return judged_so_far(
        conn, HOUR_COUNTS, start, end, lambda since, until: hour_counts(conn, since, until), lambda _: True
    )
