"""Passing verdicts of the checks that judge "the hour so far" in every micro-batch run, kept so that the
next run judges only what came after: without them a check reads the whole hour again in each run, and a
run late in a busy hour takes longer than its window (reconciliation: 17.7 s in an hour's fourth minute at
5,000 msg/s).

A verdict over [start, end) holds while no batch overlapping it was written by a transaction the verdict's
snapshot did not see: landing and decoding stamp their batch row with their transaction id
(`storage.open_batch`), so a re-run, a heal or a backfill of any part of the range, committed or still
running, voids it. Only passing verdicts are kept, so a failing part is judged again in every run until it
is fixed. Rows changed by hand, outside a batch, are not noticed; the run that closes the hour and every run
from the UI judge the whole hour afresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

#: Verdicts of hours further back than this are dropped when a new one is kept.
KEEP_FOR = timedelta(hours=3)


@dataclass(frozen=True, slots=True)
class Verdict:
    end: datetime  # the verdict covers [hour start, end)
    totals: dict[str, int]


def valid_verdict(conn: psycopg.Connection, check: str, start: datetime, end: datetime) -> Verdict | None:
    """The longest kept verdict of `check` over [start, e) with e <= end that still holds, in the
    caller's snapshot (which must be the one the caller judges the rest in: REPEATABLE READ)."""
    row = conn.execute(
        """SELECT v.range_end, v.totals FROM check_verdicts v
           WHERE v.check_name = %(c)s AND v.range_start = %(s)s AND v.range_end <= %(e)s
             AND NOT EXISTS (
                 SELECT 1 FROM batches b
                 WHERE b.range_start < v.range_end AND b.range_end > v.range_start
                   AND (b.written_xid IS NULL OR NOT pg_visible_in_snapshot(b.written_xid, v.seen)))
           ORDER BY v.range_end DESC LIMIT 1""",
        {"c": check, "s": start, "e": end},
    ).fetchone()
    return Verdict(row[0], {k: int(v) for k, v in row[1].items()}) if row else None


def current_snapshot(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
    assert row is not None
    return str(row[0])


def keep_verdict(
    conn: psycopg.Connection, check: str, start: datetime, end: datetime, seen: str, totals: dict[str, int]
) -> None:
    """Keep a passing verdict judged in snapshot `seen`; drop this hour's shorter ones and old hours'."""
    conn.execute(
        """INSERT INTO check_verdicts (check_name, range_start, range_end, seen, totals)
           VALUES (%(c)s, %(s)s, %(e)s, %(seen)s::pg_snapshot, %(t)s)
           ON CONFLICT (check_name, range_start, range_end)
           DO UPDATE SET seen = excluded.seen, totals = excluded.totals, recorded_at = clock_timestamp()""",
        {"c": check, "s": start, "e": end, "seen": seen, "t": Jsonb(totals)},
    )
    conn.execute(
        """DELETE FROM check_verdicts
           WHERE check_name = %(c)s
             AND ((range_start = %(s)s AND range_end < %(e)s) OR range_end < %(old)s)""",
        {"c": check, "s": start, "e": end, "old": start - KEEP_FOR},
    )
