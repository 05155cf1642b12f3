"""The look-ups of an arrival range's rows by raw id read a range of an index, not the whole fact table:
with 100,000 measurements stored and a range of 50, none of the per-range queries of a micro-batch run
reads as many rows of `measurements` by sequential scan as the range holds (PostgreSQL counts them in
`pg_stat_xact_user_tables`; a hash join may start a scan it then finds it does not need), and finding the
range's raw ids reads the range's raw messages, not those before it.

On TimescaleDB the rows are in the hypertables' chunks, whose reads are counted with the parent's; the
rollups' per-range query there is the look-up of the hours to refresh (`rollup_hours`): the refresh itself
reads those hours by time, and cannot run inside the transaction the reads are counted in."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from dagster_project.lib.hour_summaries import hour_counts
from dagster_project.lib.raw_ids import raw_id_span
from dagster_project.lib.retention import continuous_aggregates, hypertables
from dagster_project.lib.rollups import refresh_rollups, rollup_hours
from dagster_project.lib.storage.quality import implausible_readings, reconcile

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
            """INSERT INTO devices (device_key, kind) VALUES ('span-1', 'plain')
               ON CONFLICT (device_key) DO UPDATE SET kind = excluded.kind RETURNING device_id"""
        ).fetchone()
        (metric_id,) = conn.execute(
            """INSERT INTO metrics (name, unit) VALUES ('humidity', '%')
               ON CONFLICT (name, unit) DO UPDATE SET name = excluded.name RETURNING metric_id"""
        ).fetchone()
        conn.execute(
            """INSERT INTO raw_messages (arrived_at, stream, entry_ms, entry_seq, topic, payload, qos, retain,
                                         rx_us, batch_id)
               SELECT %(start)s + n * %(spacing)s, 'span', n, 0, 'devices/span-1/humidity', '1', 1, false,
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
    """Rows of `table` (with its chunks and their compressed chunks, on TimescaleDB) that `query` read
    (`counted`: `BY_SCAN` or `BY_ANY_SCAN`), in this connection's open transaction."""
    relations = [table]
    if table in hypertables(conn):
        relations += [
            str(chunk)
            for (chunk,) in conn.execute(
                """SELECT format('%%I.%%I', c.schema_name, c.table_name)::regclass
                   FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.hypertable h
                     ON h.id = c.hypertable_id OR h.compressed_hypertable_id = c.hypertable_id
                   WHERE h.schema_name = current_schema() AND h.table_name = %s""",
                (table,),
            )
        ]

    def rows() -> int:
        row = conn.execute(
            f"""SELECT coalesce(sum({counted}), 0) FROM pg_stat_xact_user_tables
                WHERE relid = ANY(%s::regclass[])""",
            (relations,),
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
        (first,) = conn.execute("SELECT raw_id FROM raw_messages WHERE arrived_at = %s", (start,)).fetchone()
        assert (span.lo, span.hi, span.messages, span.dense) == (first, first + 49, 50, True)
        empty = raw_id_span(conn, START - timedelta(hours=1), START)
        assert empty.lo > empty.hi and empty.messages == 0

        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")  # every scan counted in this backend
        late = START + 90_000 * SPACING
        read = rows_read(
            conn, "raw_messages", BY_ANY_SCAN, lambda: raw_id_span(conn, late, late + 50 * SPACING)
        )
        assert read <= 50, f"{read} raw messages read to find the raw ids of 50"
        scanned = {
            name: rows_read(conn, "measurements", BY_SCAN, query)
            for name, query in _queries(conn, start, end).items()
        }
        assert all(rows < 50 for rows in scanned.values()), scanned
        assert hour_counts(conn, start, end).measurements == 50
        assert reconcile(conn, start, end).facts == 50


def test_a_ranges_rows_are_not_looked_up_in_raw_messages_once_per_row(clean_db: str) -> None:
    """Joined with `raw_messages` by raw id and arrival time, a range's fact rows were planned (tables
    without statistics) as a loop that read the range's raw messages once per fact row; with a dense span
    no query reads `raw_messages` but to find the span, and with a span that has a hole the rows are still
    exactly the range's."""
    fill(clean_db)
    start = START + 60_000 * SPACING
    end = start + 200 * SPACING
    with psycopg.connect(clean_db) as conn:
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        probes = {
            name: rows_read(conn, "raw_messages", "idx_scan", query)
            for name, query in _queries(conn, start, end).items()
        }
        assert all(n <= 6 for n in probes.values()), f"index scans of raw_messages: {probes}"
        assert _readings(conn, start, end) == 200

        # one message of the range moved an hour back: its raw id stays inside the range's span
        conn.execute(
            """UPDATE raw_messages SET arrived_at = arrived_at - interval '1 hour'
               WHERE arrived_at = %s""",
            (start + 100 * SPACING,),
        )
        span = raw_id_span(conn, start, end)
        assert (span.hi - span.lo, span.messages, span.dense) == (199, 199, False)
        assert _readings(conn, start, end) == 199
        assert hour_counts(conn, start, end).measurements == 199
        assert reconcile(conn, start, end).facts == 199
        if "hourly_rollups" in continuous_aggregates(conn):
            assert rollup_hours(conn, start, end) == [START]
            return
        assert refresh_rollups(conn, start, end) >= 1
        (rolled,) = conn.execute("SELECT sum(count) FROM rollup_parts WHERE slot = %s", (start,)).fetchone()
        # the part of the range's minute counts the readings that arrived in it (a minute of 2,000, one moved)
        assert start.second == 0 and end - start < timedelta(minutes=1)
        assert rolled == 1999


def _readings(conn: psycopg.Connection, start: datetime, end: datetime) -> int:
    """Numeric readings of [start, end) that the plausibility check looked at."""
    return sum(m.readings for m in implausible_readings(conn, start, end).metrics)


def _queries(conn: psycopg.Connection, start: datetime, end: datetime) -> dict[str, Callable[[], object]]:
    """The per-range queries of a micro-batch run over [start, end)."""
    aggregate = "hourly_rollups" in continuous_aggregates(conn)
    return {
        "hour counts": lambda: hour_counts(conn, start, end),
        "reconciliation": lambda: reconcile(conn, start, end),
        "plausibility": lambda: implausible_readings(conn, start, end),
        "rollups": lambda: rollup_hours(conn, start, end) if aggregate else refresh_rollups(conn, start, end),
    }
