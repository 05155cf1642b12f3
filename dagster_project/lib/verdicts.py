"""Verdicts of the checks that judge "the hour so far" in every micro-batch run, kept so that the next run
judges only what came after: without them a check reads the whole hour again in each run, and a run late in
a busy hour takes longer than its window (reconciliation: 17.7 s in an hour's fourth minute at 5,000 msg/s,
plausibility 3.8 s in its third and growing). The `telemetry` asset keeps the hour's counts the same way,
so the run that closes an hour reports the hour's totals without counting it whole (`compaction.HOUR_COUNTS`;
counting an hour of 2,000,000 messages took 7.6-8.4 s).

A verdict keeps the totals of [hour start, end): counts that add up over disjoint ranges (`Partial`). It
holds while no batch overlapping it was written by a transaction that the judging run's snapshot sees and
the verdict's did not: landing and decoding stamp their batch row with their transaction id
(`storage.batches.open_batch`), so a re-run, a heal or a backfill of any part of the range voids it once it
has committed; one still running voids nothing yet (the judging snapshot cannot see its rows either).

A backfill of the open hour writes it page by page for minutes, each page committed: read strictly, every
live run meanwhile would judge the whole hour again (minutes each at 1,000 msg/s, so live windows would
wait behind the backfill). Instead a live run reads on from a verdict that only backfills have voided and
says so (`ReadFrom.provisional`: the part before was judged before those backfills rewrote it), without
keeping its own; the backfill's runs judge their hours whole, once, and keep that verdict, from which the
live runs read on exactly again. A check may keep only
passing verdicts (reconciliation does, so a failing part is judged again in every run until it is fixed).
Rows changed by hand, outside a batch, are not noticed; a check run from the UI judges the whole hour
afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, Self, TypeVar

import psycopg
from psycopg.types.json import Jsonb

#: Verdicts of hours further back than this are dropped when a new one is kept.
KEEP_FOR = timedelta(hours=3)


@dataclass(frozen=True, slots=True)
class Verdict:
    end: datetime  # the verdict covers [hour start, end)
    totals: dict[str, Any]
    #: backfills that have written the range since it was judged (empty: the verdict holds)
    voided_by_backfills: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReadFrom:
    """Where a judgement began to read: what came before was judged earlier and reused."""

    at: datetime
    #: backfills that rewrote the reused part since it was judged (their runs judge it)
    provisional: tuple[str, ...] = ()

    def metadata(self) -> dict[str, str]:
        if not self.provisional:
            return {"read_from": self.at.isoformat()}
        return {"read_from": self.at.isoformat(), "judged_before_backfill": ", ".join(self.provisional)}


class Partial(Protocol):
    """A check's judgement of a range, as totals that add up over disjoint ranges."""

    def totals(self) -> dict[str, Any]:
        """What is kept of it (JSON)."""
        ...

    def plus(self, totals: dict[str, Any]) -> Self:
        """This judgement and the kept one of the range before it (`totals()` of that)."""
        ...


P = TypeVar("P", bound=Partial)


def usable_verdict(
    conn: psycopg.Connection, check: str, start: datetime, end: datetime, *, provisional: bool
) -> Verdict | None:
    """The longest kept verdict of `check` over [start, e) with e <= end that still holds in the caller's
    snapshot (which must be the one the caller judges the rest in: REPEATABLE READ): no batch overlapping
    it committed in that snapshot unseen by the verdict's. With `provisional`, when none holds, the longest
    one that only backfills have voided (`Verdict.voided_by_backfills`)."""
    rows = conn.execute(
        """SELECT v.range_end, v.totals,
                  array(SELECT DISTINCT coalesce(b.backfill, '') FROM batches b
                        WHERE b.range_start < v.range_end AND b.range_end > v.range_start
                          AND (b.written_xid IS NULL
                               OR (pg_visible_in_snapshot(b.written_xid, pg_current_snapshot())
                                   AND NOT pg_visible_in_snapshot(b.written_xid, v.seen))))
           FROM check_verdicts v
           WHERE v.check_name = %(c)s AND v.range_start = %(s)s AND v.range_end <= %(e)s
           ORDER BY v.range_end DESC""",
        {"c": check, "s": start, "e": end},
    ).fetchall()
    for range_end, totals, voided_by in rows:
        if not voided_by:
            return Verdict(range_end, dict(totals))
    if provisional and rows and "" not in rows[0][2]:
        return Verdict(rows[0][0], dict(rows[0][1]), tuple(sorted(rows[0][2])))
    return None


def current_snapshot(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
    assert row is not None
    return str(row[0])


def keep_verdict(
    conn: psycopg.Connection, check: str, start: datetime, end: datetime, seen: str, totals: dict[str, Any]
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


def judged_so_far(
    conn: psycopg.Connection,
    check: str,
    start: datetime,
    end: datetime,
    judge: Callable[[datetime, datetime], P],
    keep: Callable[[P], bool],
    *,
    provisional: bool = True,
) -> tuple[P, ReadFrom]:
    """`check`'s judgement of [start, end) (an hour so far) that reads, through `judge`, only what follows
    its kept verdict still holding for the hour's beginning (or, with `provisional`, one only backfills
    have voided); the judgement and where it began to read. A judgement that `keep` accepts is kept for the
    next run, unless it reused a voided verdict. `conn` must be fresh: its first transaction is REPEATABLE
    READ, so the verdict, the reading and the snapshot kept agree."""
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    kept = usable_verdict(conn, check, start, end, provisional=provisional)
    since = kept.end if kept is not None else start
    judged = judge(since, end)
    seen = current_snapshot(conn)
    conn.commit()
    conn.isolation_level = None
    if kept is not None:
        judged = judged.plus(kept.totals)
    voided_by = kept.voided_by_backfills if kept is not None else ()
    if keep(judged) and not voided_by:
        keep_verdict(conn, check, start, end, seen, judged.totals())
        conn.commit()
    return judged, ReadFrom(since, voided_by)
