"""On TimescaleDB a run's look-ups by raw id leave compressed history out: with days of readings in
compressed chunks, none of the per-range queries of a micro-batch run reads a row of a compressed chunk
(PostgreSQL counts the rows each scan read in `pg_stat_xact_user_tables`, compressed chunks included),
where with chunk skipping off each of them reads every compressed chunk. A write into compressed history
(a backfill of old readings) leaves its chunk partial, read whole by every look-up, until it is compressed
again: the run that wrote it does so, and the chunk is left out again. Runs where the suite's server has
TimescaleDB 2.16 or later (`IOT_TEST_PG_SERVER`); on plain PostgreSQL there is no compressed history."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from dagster import DagsterInstance

from dagster_project.lib.chunks import (
    PARTIAL,
    SKIPPING,
    enable_raw_id_skipping,
    partial_chunks,
    recompress_partial,
    skipping_supported,
)
from dagster_project.lib.hour_summaries import hour_counts
from dagster_project.lib.rollups import rollup_hours
from dagster_project.lib.storage.quality import implausible_readings, reconcile
from iot_core.settings import Settings
from iot_etl.status_timescale import skipping_lines
from tests.support.hours import ClosedHour

pytestmark = pytest.mark.services

DAY = timedelta(days=1)
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
#: Compressed history: these days back, each day a chunk of its own (the default chunk interval).
HISTORY_DAYS = range(10, 15)
PER_DAY = 500
RECENT = 300  # readings of the run's range, one per raw message, a second apart
NAMES = ("hour counts", "reconciliation", "plausibility", "rollups")
COLUMNS = "ts, device_id, metric_id, value_num, arrived_at, raw_id, batch_id"


@pytest.fixture
def timescale_db(clean_db: str) -> str:
    with psycopg.connect(clean_db) as conn:
        if not skipping_supported(conn):
            pytest.skip("no TimescaleDB 2.16 or later on the suite's server (IOT_TEST_PG_SERVER)")
    return clean_db


def device_and_metric(conn: psycopg.Connection) -> tuple[int, int]:
    (device_id,) = conn.execute(
        """INSERT INTO devices (device_key, kind) VALUES ('history-1', 'plain')
           ON CONFLICT (device_key) DO UPDATE SET kind = 'plain' RETURNING device_id"""
    ).fetchone()
    (metric_id,) = conn.execute(
        """INSERT INTO metrics (name, unit) VALUES ('humidity', '%')
           ON CONFLICT (name, unit) DO UPDATE SET unit = excluded.unit RETURNING metric_id"""
    ).fetchone()
    return device_id, metric_id


def fill(url: str) -> tuple[datetime, datetime]:
    """Compressed history (raw ids below 0: older readings, lower ids) and a recent range of `RECENT`
    readings; returns the range."""
    with psycopg.connect(url, autocommit=True) as conn:
        device_id, metric_id = device_and_metric(conn)
        for back in HISTORY_DAYS:
            conn.execute(
                f"""INSERT INTO measurements ({COLUMNS})
                    SELECT %(day)s + n * interval '1 minute', %(d)s, %(m)s, 50, %(day)s,
                           -%(back)s * %(r)s + n, 0
                    FROM generate_series(0, %(r)s - 1) AS n""",
                {"day": TODAY - back * DAY, "d": device_id, "m": metric_id, "back": back, "r": PER_DAY},
            )
        arrived = add_range(conn, TODAY - 2 * DAY)
        # as the compression policy does, on a database whose chunk skipping `db migrate` turned on
        conn.execute(
            "SELECT compress_chunk(c) FROM show_chunks('measurements', older_than => %s) c",
            (TODAY - 7 * DAY,),
        )
    return arrived


def add_range(
    conn: psycopg.Connection, start: datetime, n: int = RECENT, ts: datetime | None = None
) -> tuple:
    """`n` raw messages arriving a second apart from `start`, each with a reading (read at `ts` when
    given, else when it arrived); returns their arrival range."""
    device_id, metric_id = device_and_metric(conn)
    conn.execute(
        f"""WITH raw AS (
                INSERT INTO raw_messages (arrived_at, stream, entry_ms, entry_seq, topic, payload, qos,
                                          retain, rx_us, batch_id)
                SELECT %(s)s + n * interval '1 second', 'h', n, 0, 'devices/history-1/humidity', '50', 1,
                       false, 0, 0
                FROM generate_series(0, %(n)s - 1) AS n
                RETURNING raw_id, arrived_at)
            INSERT INTO measurements AS m ({COLUMNS})
            SELECT coalesce(%(ts)s::timestamptz + (arrived_at - %(s)s), arrived_at), %(d)s, %(m)s, 50,
                   arrived_at, raw_id, 0
            FROM raw
            ON CONFLICT (device_id, metric_id, ts) DO UPDATE SET value_num = excluded.value_num""",
        {"s": start, "n": n, "ts": ts, "d": device_id, "m": metric_id},
    )
    return start, start + n * timedelta(seconds=1)


def compressed_reads(conn: psycopg.Connection, query: Callable[[], object]) -> int:
    """Rows of `measurements`' compressed chunks that `query` read, in this connection's transaction."""

    def rows() -> int:
        row = conn.execute(
            """SELECT coalesce(sum(s.seq_tup_read + coalesce(s.idx_tup_fetch, 0)), 0)
               FROM pg_stat_xact_user_tables s
               JOIN _timescaledb_catalog.chunk c ON c.schema_name = s.schemaname AND c.table_name = s.relname
               JOIN _timescaledb_catalog.chunk u ON u.compressed_chunk_id = c.id
               JOIN _timescaledb_catalog.hypertable h ON h.id = u.hypertable_id
               WHERE h.table_name = 'measurements'"""
        ).fetchone()
        assert row is not None
        return int(row[0])

    before = rows()
    query()
    return rows() - before


def queries(conn: psycopg.Connection, start: datetime, end: datetime) -> dict[str, Callable[[], object]]:
    """The per-range queries of a micro-batch run (the rollups' look-up of the hours to refresh; the
    refresh reads those hours by time)."""
    calls: tuple[Callable[[], object], ...] = (
        lambda: hour_counts(conn, start, end),
        lambda: reconcile(conn, start, end),
        lambda: implausible_readings(conn, start, end),
        lambda: rollup_hours(conn, start, end),
    )
    return dict(zip(NAMES, calls, strict=True))


def reads(url: str, start: datetime, end: datetime, skipping: bool = True) -> dict[str, int]:
    options = "" if skipping else "-c timescaledb.enable_chunk_skipping=off"
    with psycopg.connect(url, options=options) as conn:
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")  # every scan counted in this backend
        return {name: compressed_reads(conn, query) for name, query in queries(conn, start, end).items()}


def test_a_runs_look_ups_leave_compressed_history_out(timescale_db: str) -> None:
    start, end = fill(timescale_db)
    with psycopg.connect(timescale_db) as conn:
        assert reconcile(conn, start, end).facts == RECENT
        (compressed,) = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'measurements' AND is_compressed"
        ).fetchone()
    assert compressed == len(HISTORY_DAYS)
    assert reads(timescale_db, start, end) == dict.fromkeys(NAMES, 0)
    # the baseline: without chunk skipping every look-up reads every compressed chunk
    assert all(n >= len(HISTORY_DAYS) for n in reads(timescale_db, start, end, skipping=False).values())


def test_a_write_into_compressed_history_is_compressed_again(timescale_db: str) -> None:
    """A reading of a compressed day arriving now gets the newest raw id: compressed again, its chunk's
    range reaches up to that id, so the look-ups of every later range leave it out again."""
    fill(timescale_db)
    day = TODAY - HISTORY_DAYS[0] * DAY
    with psycopg.connect(timescale_db, autocommit=True) as conn:
        add_range(conn, TODAY - DAY, n=1, ts=day + timedelta(seconds=30))
        assert len(partial_chunks(conn, "measurements")) == 1
        later = add_range(conn, TODAY - DAY + timedelta(minutes=1))
    # partial: its raw-id range no longer holds, so every look-up reads it
    assert all(n > 0 for n in reads(timescale_db, *later).values())
    with psycopg.connect(timescale_db, autocommit=True) as conn:
        (done,) = recompress_partial(conn, ["measurements", "raw_messages"])
        assert done.table == "measurements" and len(done.chunks) == 1 and done.done
        assert partial_chunks(conn, "measurements") == []
        (stored,) = conn.execute(
            "SELECT count(*) FROM measurements WHERE ts >= %s AND ts < %s", (day, day + DAY)
        ).fetchone()
    assert stored == PER_DAY + 1
    assert reads(timescale_db, *later) == dict.fromkeys(NAMES, 0)


def test_a_backfill_run_compresses_again_what_it_wrote_into_compressed_history(
    timescale_db: str, settings: Settings
) -> None:
    """Readings of a compressed day arriving now (a device's backlog; a backfill re-decodes such hours
    too): the run's `hourly_rollups` step, as the owner, compresses their chunk again."""
    fill(timescale_db)
    day = TODAY - HISTORY_DAYS[-1] * DAY
    hour = ClosedHour(settings)
    for n in range(5):
        ts = (day + timedelta(hours=3, seconds=n)).isoformat().replace("+00:00", "Z")
        hour.add(1 + n, "devices/history-1/humidity", json.dumps({"value": 40 + n, "ts": ts}))
    with DagsterInstance.ephemeral() as instance:
        result = hour.run(instance)
    assert result.success
    metadata = result.asset_materializations_for_node("hourly_rollups")[0].metadata
    assert metadata["chunks_recompressed"].value == 1
    with psycopg.connect(timescale_db) as conn:
        assert partial_chunks(conn, "measurements") == []
        (statuses,) = conn.execute(
            """SELECT array_agg(DISTINCT c.status & %s) FROM _timescaledb_catalog.chunk c
               JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
               WHERE h.table_name = 'measurements'""",
            (PARTIAL,),
        ).fetchone()
        (late,) = conn.execute(
            "SELECT count(*) FROM measurements WHERE ts >= %s AND ts < %s AND raw_id > 0", (day, day + DAY)
        ).fetchone()
    assert statuses == [0] and late == 5


def test_where_chunk_skipping_may_not_be_turned_on_migrate_and_status_say_how(timescale_db: str) -> None:
    """As a role that owns neither the database nor the tables, `db migrate`'s step changes nothing and
    says why; `status`, asked in a session without the setting, says what that costs and what to run."""
    role = f"iot_plain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(timescale_db, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        # as if the database had never been given the setting, nor the table its tracking
        conn.execute(f"ALTER DATABASE {conn.info.dbname} RESET {SKIPPING}")
        conn.execute(f"SET {SKIPPING} = on")
        conn.execute("SELECT disable_chunk_skipping('measurements', 'raw_id')")
    try:
        url = timescale_db.replace("://postgres@", f"://{role}@")
        with psycopg.connect(url, autocommit=True) as conn:
            said = enable_raw_id_skipping(conn)
            lines = dict((item, value) for _, item, value in skipping_lines(conn))
    finally:
        with psycopg.connect(timescale_db, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {conn.info.dbname} SET {SKIPPING} = on")
            conn.execute(f"SET {SKIPPING} = on")
            conn.execute("SELECT enable_chunk_skipping('measurements', 'raw_id', if_not_exists => true)")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
    assert said[0].startswith(f"chunk skipping: could not turn it on for this database ({SKIPPING}")
    assert f'ALTER DATABASE "{timescale_db.rsplit("/", 1)[1]}" SET {SKIPPING} = on' in said[0]
    assert "measurements: raw ids not tracked (only the table's owner may turn it on)" in said
    assert lines["chunk skipping"].startswith("off for this database")
    assert "decompress every compressed chunk" in lines["chunk skipping"]
