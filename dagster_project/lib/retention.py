"""Retention SQL: age limits per table and TimescaleDB's policies.

On plain PostgreSQL old rows go in batches of a bounded size, each found through an index on the age
column (oldest first, `ctid` lookups), each its own transaction, under a time budget: a run never holds
a long lock nor builds a huge transaction, and a table of a billion rows costs the same per batch as a
small one; what a run could not finish the next one continues. Hypertables and continuous aggregates on
TimescaleDB lose whole chunks (`drop_chunks`, and the same rule as a retention policy for when Dagster is
down).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import psycopg


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


def policy_job(conn: psycopg.Connection, relation: str, proc: str) -> tuple[int, dict] | None:
    """(job id, config) of `relation`'s policy job `proc` (`policy_compression`, `policy_retention`), or
    None. The jobs view names a continuous aggregate's policies by the aggregate since TimescaleDB 2.20
    and by its materialization hypertable before: both names are looked for, so the policy is found on
    either (looked for under one name only, it was never found on the other, and every compaction
    replaced it)."""
    row = conn.execute(
        """SELECT j.job_id, j.config FROM timescaledb_information.jobs j
           WHERE j.proc_name = %(proc)s
             AND ((j.hypertable_schema = current_schema() AND j.hypertable_name = %(relation)s)
                  OR (j.hypertable_schema, j.hypertable_name) IN (
                      SELECT c.materialization_hypertable_schema, c.materialization_hypertable_name
                      FROM timescaledb_information.continuous_aggregates c
                      WHERE c.view_schema = current_schema() AND c.view_name = %(relation)s))
           ORDER BY j.job_id LIMIT 1""",
        {"proc": proc, "relation": relation},
    ).fetchone()
    return (int(row[0]), row[1] or {}) if row else None


def _policy(conn: psycopg.Connection, table: str, proc: str, key: str) -> str | None:
    job = policy_job(conn, table, proc)
    return str(job[1][key]) if job and key in job[1] else None


def _same_interval(conn: psycopg.Connection, current: str | None, wanted: str | None) -> bool:
    if current is None or wanted is None:
        return current is wanted
    row = conn.execute("SELECT %s::interval = %s::interval", (current, wanted)).fetchone()
    return bool(row and row[0])


def apply_timescale_policies(
    conn: psycopg.Connection,
    table: str,
    chunk_interval: str,
    compress_after: str | None,
    drop_after_days: int,
) -> list[str]:
    """Make the hypertable's chunk interval and its compression and retention policies those of the
    settings (policies replaced only when they differ; `compress_after` None: its compression policy is
    left as it is); returns what changed, for the run's metadata."""
    changed: list[str] = []
    conn.execute("SELECT set_chunk_time_interval(%s::regclass, %s::interval)", (table, chunk_interval))
    row = conn.execute(
        """SELECT compression_enabled FROM timescaledb_information.hypertables
           WHERE hypertable_schema = current_schema() AND hypertable_name = %s""",
        (table,),
    ).fetchone()
    if compress_after is not None and row and row[0]:
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
