"""Retention and compaction SQL: age limits per table, TimescaleDB policies, the compaction log.

On plain PostgreSQL old rows go in batches of a bounded size, each found through an index on the age
column (oldest first, `ctid` lookups), each its own transaction, under a time budget: a run never holds
a long lock nor builds a huge transaction, and a table of a billion rows costs the same per batch as a
small one; what a run could not finish the next one continues. Hypertables and continuous aggregates on
TimescaleDB lose whole chunks (`drop_chunks`, and the same rule as a retention policy for when Dagster is
down).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from dagster_project.raw_ids import raw_id_span


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """Rows of `table` whose `column` is older than `days` go (0: kept for ever)."""

    table: str
    column: str
    days: int


@dataclass(slots=True)
class Removed:
    table: str
    rows: int = 0
    chunks: int = 0
    done: bool = True  # False: the budget ran out with old rows left; the next run continues


def has_timescaledb(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None


def hypertables(conn: psycopg.Connection) -> set[str]:
    if not has_timescaledb(conn):
        return set()
    rows = conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables").fetchall()
    return {name for (name,) in rows}


def continuous_aggregates(conn: psycopg.Connection) -> set[str]:
    """The names of the continuous aggregates (views over hypertables that TimescaleDB materializes)."""
    if not has_timescaledb(conn):
        return set()
    rows = conn.execute("SELECT view_name FROM timescaledb_information.continuous_aggregates").fetchall()
    return {name for (name,) in rows}


def delete_older(
    conn: psycopg.Connection, rule: RetentionRule, cutoff: datetime, batch_rows: int, deadline: float
) -> Removed:
    """Delete rows older than `cutoff` in index-ordered batches until none are left or `deadline`
    (time.monotonic) passes. `conn` must be in autocommit mode: every batch commits on its own."""
    removed = Removed(rule.table)
    statement = (
        f"DELETE FROM {rule.table} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {rule.table} WHERE {rule.column} < %s ORDER BY {rule.column} LIMIT %s))"
    )
    while True:
        if time.monotonic() > deadline:
            removed.done = False
            return removed
        deleted = conn.execute(statement, (cutoff, batch_rows)).rowcount
        removed.rows += deleted
        if deleted < batch_rows:
            return removed


def drop_old_chunks(conn: psycopg.Connection, table: str, cutoff: datetime) -> Removed:
    """Drop the chunks of hypertable or continuous aggregate `table` whose data all lies before `cutoff`
    (counted in chunks: counting their rows would cost a scan)."""
    row = conn.execute(
        "SELECT count(*) FROM drop_chunks(%s::regclass, older_than => %s)", (table, cutoff)
    ).fetchone()
    return Removed(table, chunks=int(row[0]) if row else 0)


def _job_table(conn: psycopg.Connection, relation: str) -> str:
    """The name TimescaleDB's jobs give `relation`: a continuous aggregate's policies run on its
    materialization hypertable."""
    row = conn.execute(
        """SELECT materialization_hypertable_name FROM timescaledb_information.continuous_aggregates
           WHERE view_name = %s""",
        (relation,),
    ).fetchone()
    return row[0] if row else relation


def _policy(conn: psycopg.Connection, table: str, proc: str, key: str) -> str | None:
    row = conn.execute(
        f"""SELECT (config->>'{key}')::interval::text FROM timescaledb_information.jobs
            WHERE proc_name = %s AND hypertable_name = %s""",
        (proc, _job_table(conn, table)),
    ).fetchone()
    return row[0] if row else None


def _same_interval(conn: psycopg.Connection, current: str | None, wanted: str | None) -> bool:
    if current is None or wanted is None:
        return current is wanted
    row = conn.execute("SELECT %s::interval = %s::interval", (current, wanted)).fetchone()
    return bool(row and row[0])


def apply_timescale_policies(
    conn: psycopg.Connection, table: str, chunk_interval: str, compress_after: str, drop_after_days: int
) -> list[str]:
    """Make the hypertable's chunk interval and its compression and retention policies those of the
    settings (policies replaced only when they differ); returns what changed, for the run's metadata."""
    changed: list[str] = []
    conn.execute("SELECT set_chunk_time_interval(%s::regclass, %s::interval)", (table, chunk_interval))
    row = conn.execute(
        "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = %s",
        (table,),
    ).fetchone()
    if row and row[0]:
        current = _policy(conn, table, "policy_compression", "compress_after")
        if not _same_interval(conn, current, compress_after):
            conn.execute("SELECT remove_compression_policy(%s::regclass, if_exists => true)", (table,))
            conn.execute(
                "SELECT add_compression_policy(%s::regclass, compress_after => %s::interval)",
                (table, compress_after),
            )
            changed.append(f"{table}: compress after {compress_after} (was {current or 'never'})")
    return changed + apply_retention_policy(conn, table, drop_after_days)


def apply_retention_policy(conn: psycopg.Connection, relation: str, drop_after_days: int) -> list[str]:
    """Make the retention policy of hypertable or continuous aggregate `relation` drop after
    `drop_after_days` (0: no policy), replaced only when it differs; returns what changed."""
    wanted = f"{drop_after_days} days" if drop_after_days else None
    current = _policy(conn, relation, "policy_retention", "drop_after")
    if _same_interval(conn, current, wanted):
        return []
    conn.execute("SELECT remove_retention_policy(%s::regclass, if_exists => true)", (relation,))
    if wanted:
        conn.execute(
            "SELECT add_retention_policy(%s::regclass, drop_after => %s::interval)", (relation, wanted)
        )
    return [f"{relation}: drop after {wanted or 'never'} (was {current or 'never'})"]


@dataclass(frozen=True, slots=True)
class JobError:
    job_id: int
    proc_name: str
    table: str
    finished_at: datetime | None
    message: str


def timescale_failed_jobs(conn: psycopg.Connection) -> list[JobError]:
    """Policy jobs (compression, retention, ...) whose last run failed, with their latest error."""
    if not has_timescaledb(conn):
        return []
    rows = conn.execute(
        """SELECT s.job_id, j.proc_name, coalesce(c.view_name, j.hypertable_name, ''), e.finish_time,
                  coalesce(e.err_message, 'last run failed')
           FROM timescaledb_information.job_stats s
           JOIN timescaledb_information.jobs j USING (job_id)
           LEFT JOIN timescaledb_information.continuous_aggregates c
                  ON c.materialization_hypertable_name = j.hypertable_name
           LEFT JOIN LATERAL (SELECT finish_time, err_message FROM timescaledb_information.job_errors x
                              WHERE x.job_id = s.job_id ORDER BY finish_time DESC LIMIT 1) e ON true
           WHERE s.last_run_status = 'Failed' ORDER BY s.job_id"""
    ).fetchall()
    return [JobError(int(a), b, c, d, e) for a, b, c, d, e in rows]


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
    the batches that filled it."""
    if counts is None:
        counts = hour_counts(conn, start, end)
    lag = conn.execute(
        """SELECT count(*), extract(epoch FROM max(finished_at - range_end)),
                  extract(epoch FROM avg(finished_at - range_end))
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


@dataclass(frozen=True, slots=True)
class CompactionRecord:
    run_id: str
    started_at: datetime
    stream_entries_trimmed: int
    stream_bytes_freed: int
    rows_deleted: int
    chunks_dropped: int
    runs_deleted: int
    hours_summarised: int
    details: dict


def record_compaction(conn: psycopg.Connection, record: CompactionRecord) -> None:
    conn.execute(
        """INSERT INTO compactions (run_id, started_at, stream_entries_trimmed, stream_bytes_freed,
                                    rows_deleted, chunks_dropped, runs_deleted, hours_summarised, details)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (
            record.run_id,
            record.started_at,
            record.stream_entries_trimmed,
            record.stream_bytes_freed,
            record.rows_deleted,
            record.chunks_dropped,
            record.runs_deleted,
            record.hours_summarised,
            Jsonb(record.details),
        ),
    )


def last_compaction(conn: psycopg.Connection) -> tuple | None:
    """(finished_at, entries trimmed, bytes freed, rows deleted, chunks dropped, runs deleted) or None."""
    return conn.execute(
        """SELECT finished_at, stream_entries_trimmed, stream_bytes_freed, rows_deleted, chunks_dropped,
                  runs_deleted FROM compactions ORDER BY finished_at DESC LIMIT 1"""
    ).fetchone()


def table_sizes(conn: psycopg.Connection, tables: list[str]) -> dict[str, int]:
    """Bytes on disk per table, hypertable chunks included."""
    hyper = hypertables(conn)
    sizes: dict[str, int] = {}
    for table in tables:
        query = (
            "SELECT hypertable_size(%s::regclass)"
            if table in hyper
            else "SELECT pg_total_relation_size(%s::regclass)"
        )
        row = conn.execute(query, (table,)).fetchone()
        sizes[table] = int(row[0] or 0) if row else 0
    return sizes
