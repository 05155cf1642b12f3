"""The look-ups of an arrival range's rows by raw id read a range of an index, not the whole fact table:
with 100,000 measurements stored and a range of 50, none of the per-range queries of a micro-batch run
reads as many rows of `measurements` by sequential scan as the range holds (PostgreSQL counts them in
`pg_stat_xact_user_tables`; a hash join may start a scan it then finds it does not need), and finding the
range's raw ids reads the range's raw messages, not those before it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from dagster_project.raw_ids import raw_id_span
from dagster_project.retention import hour_counts
from dagster_project.rollups import refresh_rollups
from dagster_project.storage import implausible_readings, reconcile

pytestmark = pytest.mark.services

#: Two hours ago: rollups of such an hour are merged from their minutes' parts, as in a micro-batch run.
START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
STORED = 100_000
SPACING = timedelta(milliseconds=30)  # 100,000 messages over 50 minutes


def fill(url: str) -> None:
    """`STORED` plain readings, one per raw message, arriving `SPACING` apart from `START`; not analysed
    since, like tables growing by 300,000 rows a minute between autovacuum's visits."""
    with psycopg.connect(url) as conn:
        (batch_id,) = conn.execute(
            """INSERT INTO batches (run_id, partition_key, range_start, range_end, start_id, end_id,
                                    streams, decoder_version)
               VALUES ('span', 'span', %s, %s, '0-0', '0-0', '{span}', 'test') RETURNING batch_id""",
            (START, START + STORED * SPACING),
        ).fetchone()
        (device_id,) = conn.execute(
            "INSERT INTO devices (device_key, kind) VALUES ('span-1', 'plain') RETURNING device_id"
        ).fetchone()
        (metric_id,) = conn.execute(
            "INSERT INTO metrics (name, unit) VALUES ('span_t', '') RETURNING metric_id"
        ).fetchone()
        conn.execute(
            """INSERT INTO raw_messages (arrived_at, stream, entry_ms, entry_seq, topic, payload, qos, retain,
                                         rx_us, batch_id)
               SELECT %(start)s + n * %(spacing)s, 'span', n, 0, 'devices/span-1/span_t', '1', 1, false,
                      0, %(b)s
               FROM generate_series(0, %(n)s - 1) AS n ORDER BY n""",
            {"start": START, "spacing": SPACING, "n": STORED, "b": batch_id},
        )
        conn.execute(
            """INSERT INTO measurements (ts, device_id, metric_id, value_num, arrived_at, raw_id, batch_id)
               SELECT arrived_at, %s, %s, 1.0, arrived_at, raw_id, batch_id FROM raw_messages""",
            (device_id, metric_id),
        )


#: Rows read by sequential scans, and by any scan, as `pg_stat_xact_user_tables` counts them.
BY_SCAN = "seq_tup_read"
BY_ANY_SCAN = "seq_tup_read + coalesce(idx_tup_fetch, 0)"


def rows_read(conn: psycopg.Connection, table: str, counted: str, query: Callable[[], object]) -> int:
    """Rows of `table` that `query` read (`counted`: `BY_SCAN` or `BY_ANY_SCAN`), in this connection's
    open transaction."""

    def rows() -> int:
        row = conn.execute(
            f"SELECT coalesce(sum({counted}), 0) FROM pg_stat_xact_user_tables WHERE relname = %s", (table,)
        ).fetchone()
        assert row is not None
        return int(row[0])

    before = rows()
    query()
    return rows() - before


def test_a_ranges_rows_are_found_through_the_raw_id_index_not_a_scan_of_the_table(clean_db: str) -> None:
    fill(clean_db)
    start = START + 40_000 * SPACING
    end = start + 50 * SPACING
    with psycopg.connect(clean_db) as conn:
        span = raw_id_span(conn, start, end)
        assert span["raw_hi"] - span["raw_lo"] == 49
        (first,) = conn.execute("SELECT raw_id FROM raw_messages WHERE arrived_at = %s", (start,)).fetchone()
        assert span["raw_lo"] == first
        empty = raw_id_span(conn, START - timedelta(hours=1), START)
        assert empty["raw_lo"] > empty["raw_hi"]

        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")  # every scan counted in this backend
        late = START + 90_000 * SPACING
        read = rows_read(
            conn, "raw_messages", BY_ANY_SCAN, lambda: raw_id_span(conn, late, late + 50 * SPACING)
        )
        assert read <= 50, f"{read} raw messages read to find the raw ids of 50"
        queries: dict[str, Callable[[], object]] = {
            "hour counts": lambda: hour_counts(conn, start, end),
            "reconciliation": lambda: reconcile(conn, start, end),
            "plausibility": lambda: implausible_readings(conn, start, end),
            "rollups": lambda: refresh_rollups(conn, start, end),
        }
        scanned = {name: rows_read(conn, "measurements", BY_SCAN, query) for name, query in queries.items()}
        assert all(rows < 50 for rows in scanned.values()), scanned
        assert hour_counts(conn, start, end).measurements == 50
        assert reconcile(conn, start, end).facts == 50
