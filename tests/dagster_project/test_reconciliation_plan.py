"""Reconciliation on a new database, whose tables have never been analysed, reads each table's rows of the
range once: no part of its plan that reads a table runs once per raw message. Joined per message, such
tables (estimated at a few rows) were planned as a loop over the element counts for every message: 22 s for
a window of 50,000 messages of the fleet's mix."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from dagster_project.lib.batch import decode_window, land_window, window_batch
from dagster_project.lib.raw_entries import raw_row
from dagster_project.lib.storage.quality import RECONCILE_SQL, reconcile, reconcile_params
from dagster_project.lib.windows import Window
from iot_core.formats.batch import DecodeOptions
from iot_core.streams import utc_from_ms
from iot_etl.migrate import apply_migrations, ensure_database
from tests.support.database import database_url, drop_database

pytestmark = pytest.mark.services

START_MS = 1_690_000_000_000
WINDOW = Window(START_MS, START_MS + 10_000)
ARRAYS = 1_000  # event arrays of three elements, one of them rejected by validation
READINGS = 1_000  # plain readings
#: The tables whose rows of the range reconciliation reads.
RANGE_TABLES = {"raw_messages", "measurements", "events", "rejected", "raw_elements"}
ANALYSED_BY_AUTOVACUUM = (*RANGE_TABLES, "batches")


@pytest.fixture
def new_db() -> Iterator[str]:
    """A migrated database of its own whose tables autovacuum leaves unanalysed."""
    name = f"iot_recplan_{uuid.uuid4().hex[:8]}"
    url = database_url(name)
    ensure_database(url)
    try:
        apply_migrations(url)
        with psycopg.connect(url) as conn:
            for table in ANALYSED_BY_AUTOVACUUM:
                conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        yield url
    finally:
        drop_database(name)


def _entries() -> list[tuple]:
    rows = []
    for n in range(ARRAYS):
        elements = [
            {"schema": 1, "event_id": f"e{n}-{i}", "device_id": f"plan-{n % 20}", "event_type": kind}
            for i, kind in enumerate(("door", "t" * 100, "motion"))
        ]
        fields = {b"topic": f"qs/v1/plan-{n % 20}/events".encode(), b"payload": json.dumps(elements).encode()}
        rows.append(
            raw_row(
                "plan:raw", f"{START_MS + n}-0", {**fields, b"rx_us": str((START_MS + n) * 1000).encode()}
            )
        )
    for n in range(READINGS):
        at_ms = START_MS + ARRAYS + n  # a reading without a time of its own is stamped with its arrival
        topic = f"devices/plan-r{n % 20}/temperature".encode()
        fields = {b"topic": topic, b"payload": b"21.5", b"rx_us": str(at_ms * 1000).encode()}
        rows.append(raw_row("plan:raw", f"{at_ms}-0", fields))
    return rows


def _land_and_decode(url: str) -> None:
    info = window_batch(f"plan-{uuid.uuid4().hex}", "plan", WINDOW, ["plan:raw"])
    with psycopg.connect(url) as conn:
        land_window(conn, info, [_entries()])
        decode_window(conn, info, WINDOW, DecodeOptions(), None)


def _nodes(plan: dict) -> Iterator[dict]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _tables(plan: dict) -> set[str]:
    return {node["Relation Name"] for node in _nodes(plan) if "Relation Name" in node}


def test_reconciliation_reads_each_tables_range_once_on_tables_never_analysed(new_db: str) -> None:
    _land_and_decode(new_db)
    start, end = utc_from_ms(WINDOW.start_ms), utc_from_ms(WINDOW.end_ms)
    with psycopg.connect(new_db) as conn:
        never = conn.execute(
            """SELECT count(*) FROM pg_stat_user_tables
               WHERE relname = ANY(%s) AND last_analyze IS NULL AND last_autoanalyze IS NULL""",
            (list(RANGE_TABLES),),
        ).fetchone()
        assert never == (len(RANGE_TABLES),), "the tables were analysed: the test shows nothing"
        rec = reconcile(conn, start, end)
        assert (rec.raw, rec.unaccounted, rec.elements) == (ARRAYS + READINGS, 0, 3 * ARRAYS + READINGS)
        assert (rec.facts, rec.rejections) == (2 * ARRAYS + READINGS, ARRAYS)
        ((plan,),) = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + RECONCILE_SQL, reconcile_params(conn, start, end, 20)
        ).fetchone()
    repeated = [
        (node["Node Type"], sorted(_tables(node) & RANGE_TABLES), node["Actual Loops"])
        for node in _nodes(plan["Plan"])
        if node["Actual Loops"] > 1 and _tables(node) & RANGE_TABLES
    ]
    assert not repeated, f"parts of the plan that read the range's rows more than once: {repeated}"
