"""The checks' SQL holds under parallel plans: on plain PostgreSQL with parallel plans forced, and on
TimescaleDB (where the suite's server has it, `IOT_TEST_PG_SERVER`) with one chunk compressed and a range
that spans two chunks. Each query must answer, and answer the same as with the planner's own choice."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from dagster_project.lib.batch import decode_window, land_window
from dagster_project.lib.raw_entries import raw_row
from dagster_project.lib.retention import has_timescaledb
from dagster_project.lib.rollups import refresh_rollups
from dagster_project.lib.storage.batches import BatchInfo, landed_ranges
from dagster_project.lib.storage.quality import (
    device_freshness,
    duplicate_count,
    implausible_readings,
    reconcile,
    schema_pass_rate,
)
from dagster_project.lib.windows import Window
from iot_core.formats.batch import DECODER_VERSION, DecodeOptions

pytestmark = pytest.mark.services

MIDNIGHT = datetime(2024, 3, 10, tzinfo=UTC)  # chunks are one day: the windows below straddle two
MIDNIGHT_MS = int(MIDNIGHT.timestamp() * 1000)
START, END = MIDNIGHT - timedelta(minutes=5), MIDNIGHT + timedelta(minutes=5)
STREAM = "par:raw"


def _messages(day: str) -> list[tuple[bytes, bytes]]:
    good = [(f"devices/par-{i}/temperature".encode(), f"{20 + i}.5 °C".encode()) for i in range(12)]
    return [
        *good,
        (b"devices/par-hot/temperature", b"999 \xc2\xb0C"),  # implausible, stored
        (b"devices/par-1/humidity", b'{"value": 40, "ts": "%s"}' % day.encode()),
        (b"devices/par-1/humidity", b'{"value": 40, "ts": "%s"}' % day.encode()),  # a redelivery
        (
            b"qs/v1/par-ev/events",
            b'[{"schema":1,"event_id":"%s-a","device_id":"par-ev","event_type":"x"},'
            b'{"schema":1,"event_id":"%s-b","device_id":"par-ev","event_type":"%s"}]'
            % (day.encode(), day.encode(), b"t" * 100),
        ),
        (b"devices/par-1/temperature", b"NaN"),
        (b"foo/bar", b"1"),
    ]


def _process(url: str, window_start_ms: int, day: str) -> None:
    """Land and decode one 60-s window with the real batch functions."""
    window = Window(window_start_ms, window_start_ms + 60_000)
    rows = [
        raw_row(
            STREAM,
            f"{window.start_ms + 100 * i}-0",
            {b"topic": t, b"payload": p, b"rx_us": b"%d" % ((window.start_ms + 100 * i) * 1000)},
        )
        for i, (t, p) in enumerate(_messages(day))
    ]
    info = BatchInfo(
        run_id=f"par-{uuid.uuid4().hex}",
        partition_key="par",
        range_start=datetime.fromtimestamp(window.start_ms / 1000, UTC),
        range_end=datetime.fromtimestamp(window.end_ms / 1000, UTC),
        start_id=f"{window.start_ms}-0",
        end_id=f"{window.end_ms - 1}-18446744073709551615",
        streams=[STREAM],
        decoder_version=DECODER_VERSION,
    )
    with psycopg.connect(url) as conn:
        land_window(conn, info, [rows])
        decode_window(conn, info, window, DecodeOptions(), None)


QUERIES: dict[str, Callable[[psycopg.Connection], object]] = {
    "reconcile": lambda conn: reconcile(conn, START, END),
    "schema_pass_rate": lambda conn: schema_pass_rate(conn, START, END),
    "duplicate_count": lambda conn: duplicate_count(conn, START, END),
    "implausible_readings": lambda conn: implausible_readings(conn, START, END),
    "device_freshness": lambda conn: device_freshness(conn, END, 60, 50),
    "landed_ranges": lambda conn: landed_ranges(conn, START, END, decoded=True),
    "refresh_rollups": lambda conn: refresh_rollups(conn, START, END),
}


def _force_parallel(conn: psycopg.Connection) -> None:
    (version,) = conn.execute("SHOW server_version_num").fetchone()
    # PostgreSQL 16 renamed force_parallel_mode to debug_parallel_query
    conn.execute(f"SET {'debug_parallel_query' if int(version) >= 160000 else 'force_parallel_mode'} = on")
    for setting in (
        "parallel_setup_cost",
        "parallel_tuple_cost",
        "min_parallel_table_scan_size",
        "min_parallel_index_scan_size",
    ):
        conn.execute(f"SET {setting} = 0")
    conn.execute("SET max_parallel_workers_per_gather = 2")


def _answers(url: str, parallel: bool) -> dict[str, object]:
    answers = {}
    # autocommit: on TimescaleDB refresh_rollups refreshes a continuous aggregate, which a transaction
    # block refuses
    with psycopg.connect(url, autocommit=True) as conn:
        if parallel:
            _force_parallel(conn)
        for name, query in QUERIES.items():
            answers[name] = query(conn)
        if parallel:
            plan = "\n".join(
                row[0] for row in conn.execute("EXPLAIN SELECT count(*) FROM raw_messages").fetchall()
            )
            assert "Gather" in plan, plan
    return answers


def _assert_checks_hold(url: str) -> None:
    _process(url, MIDNIGHT_MS - 60_000, "2024-03-09T23:59:30Z")
    _process(url, MIDNIGHT_MS, "2024-03-10T00:00:30Z")
    planned = _answers(url, parallel=False)
    forced = _answers(url, parallel=True)
    assert forced == planned
    rec = planned["reconcile"]
    n = len(_messages("x"))
    assert rec.raw == 2 * n and rec.unaccounted == 0, rec
    assert rec.elements == rec.facts + rec.rejections == 2 * (n + 1)
    assert planned["duplicate_count"].duplicates == 2
    assert [
        m.implausible for m in planned["implausible_readings"].metrics if m.metric == "temperature [°C]"
    ] == [2]
    assert planned["landed_ranges"] == [
        (MIDNIGHT_MS - 60_000, MIDNIGHT_MS),
        (MIDNIGHT_MS, MIDNIGHT_MS + 60_000),
    ]


def test_check_queries_under_forced_parallel_plans(clean_db: str) -> None:
    _assert_checks_hold(clean_db)


def test_check_queries_on_timescaledb_with_a_compressed_chunk_and_two_chunks(clean_db: str) -> None:
    with psycopg.connect(clean_db) as conn:
        if not has_timescaledb(conn):
            pytest.skip("the suite's server has no TimescaleDB (set IOT_TEST_PG_SERVER to one that has)")
    _process(clean_db, MIDNIGHT_MS - 60_000, "2024-03-09T23:59:30Z")
    with psycopg.connect(clean_db, autocommit=True) as conn:
        compressed = [
            row[0]
            for table in ("raw_messages", "measurements")
            for row in conn.execute(
                "SELECT compress_chunk(c) FROM show_chunks(%s::regclass, older_than => %s::timestamptz) c",
                (table, MIDNIGHT),
            ).fetchall()
        ]
        assert len(compressed) == 2, compressed
    _process(clean_db, MIDNIGHT_MS, "2024-03-10T00:00:30Z")
    with psycopg.connect(clean_db) as conn:
        chunks = conn.execute(
            """SELECT hypertable_name, count(*), count(*) FILTER (WHERE is_compressed)
               FROM timescaledb_information.chunks WHERE hypertable_name IN ('raw_messages', 'measurements')
               GROUP BY 1 ORDER BY 1"""
        ).fetchall()
    assert chunks == [("measurements", 2, 1), ("raw_messages", 2, 1)]
    planned = _answers(clean_db, parallel=False)
    forced = _answers(clean_db, parallel=True)
    assert forced == planned
    rec = planned["reconcile"]
    assert rec.unaccounted == 0 and rec.raw == 2 * len(_messages("x")), rec


def test_the_quality_checks_add_up_over_parts_of_a_range(clean_db: str) -> None:
    """What a check keeps of the hour's earlier part, plus what it reads after it, is what it would read
    over the whole range (the kept part goes through JSON, as `check_verdicts` stores it)."""
    _process(clean_db, MIDNIGHT_MS - 60_000, "2024-03-09T23:59:30Z")
    _process(clean_db, MIDNIGHT_MS, "2024-03-10T00:00:30Z")
    with psycopg.connect(clean_db) as conn:
        for judge in (schema_pass_rate, duplicate_count, implausible_readings):
            whole = judge(conn, START, END)
            earlier = json.loads(json.dumps(judge(conn, START, MIDNIGHT).totals()))
            assert judge(conn, MIDNIGHT, END).plus(earlier) == whole, judge.__name__
            assert whole.totals() != judge(conn, MIDNIGHT, END).totals(), "both parts hold something"
