"""What each compaction did (the `compactions` table) and the tables' sizes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb

from dagster_project.lib.retention import hypertables


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
