"""A database migrated on plain PostgreSQL adopts TimescaleDB when the server gains it: the next
`iot-etl db migrate` converts `measurements` and `raw_messages` to hypertables and `hourly_rollups` to a
continuous aggregate, keeps every row, says so, and does nothing more the time after.

The sequence is the real one, on a private cluster of the test server's binaries: migrated while
TimescaleDB is installed but not preloaded (004 keeps plain tables), then the server restarted with it
preloaded. Runs where the suite's server has TimescaleDB (`IOT_TEST_PG_SERVER`), like the other
TimescaleDB tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from click.testing import CliRunner

from dagster_project.lib.retention import continuous_aggregates, hypertables
from dagster_project.lib.rollups import refresh_rollups
from iot_core.settings import get_settings
from iot_etl.cli import main
from iot_etl.migrate import apply_migrations, ensure_database
from tests.support.database import server_preloads_timescaledb
from tests.support.postgres_server import PrivatePostgres
from tests.support.rollups import AGGREGATE, ROLLUPS

pytestmark = pytest.mark.services

#: Recent, so that no compression policy is due yet; on the hour
ARRIVED = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
MEASUREMENTS = "SELECT * FROM measurements ORDER BY device_id, metric_id, ts"
RAW = "SELECT * FROM raw_messages ORDER BY arrived_at, entry_ms"


@pytest.fixture
def plain_then_timescale() -> Iterator[PrivatePostgres]:
    if not server_preloads_timescaledb():
        pytest.skip("the suite's server has no TimescaleDB (set IOT_TEST_PG_SERVER to one that has)")
    with PrivatePostgres(settings={"timescaledb.telemetry_level": "off"}) as pg:
        with psycopg.connect(pg.url()) as conn:
            available = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone()
        if not available:
            pytest.skip("TimescaleDB is not installed for the PostgreSQL binaries of private clusters")
        yield pg


def add_reading(
    conn: psycopg.Connection, n: int, arrived: datetime, ts: datetime, value: float | None
) -> None:
    """One raw message that arrived at `arrived` and its measurement read at `ts` (text when no value)."""
    (raw_id,) = conn.execute(
        """INSERT INTO raw_messages (arrived_at, stream, entry_ms, entry_seq, topic, payload, qos, retain,
                                     rx_us, batch_id)
           VALUES (%s, 's', %s, 0, 'devices/adopt-1/temperature', 'x', 1, false, 0, 1) RETURNING raw_id""",
        (arrived, n),
    ).fetchone()
    conn.execute(
        """INSERT INTO measurements (ts, device_id, metric_id, value_num, value_text, arrived_at, raw_id,
                                     batch_id)
           SELECT %s, d.device_id, m.metric_id, %s, %s, %s, %s, 1
           FROM devices d, metrics m WHERE d.device_key = 'adopt-1' AND m.name = 'adopt' AND m.unit = 'C'""",
        (ts, value, None if value is not None else "n/a", arrived, raw_id),
    )


def seed(url: str) -> None:
    """Readings in two reading hours, one of them text, and the plain rollups of them."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO devices (device_key, kind) VALUES ('adopt-1', 'plain')")
        conn.execute("INSERT INTO metrics (name, unit) VALUES ('adopt', 'C')")
        for n in range(8):
            value = None if n == 3 else 20.0 + n
            add_reading(
                conn, n, ARRIVED + timedelta(seconds=n), ARRIVED - timedelta(minutes=50 - 10 * n), value
            )
        assert refresh_rollups(conn, ARRIVED, ARRIVED + timedelta(minutes=1)) == 2


def snapshot(url: str) -> tuple[list, list, list]:
    with psycopg.connect(url) as conn:
        return (
            conn.execute(MEASUREMENTS).fetchall(),
            conn.execute(RAW).fetchall(),
            conn.execute(AGGREGATE).fetchall(),
        )


def migrate_with_the_cli(url: str) -> str:
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["db", "migrate"], env={"IOT_DATABASE_URL": url})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return result.output


def test_a_plain_database_adopts_timescaledb_once_the_server_preloads_it(
    plain_then_timescale: PrivatePostgres,
) -> None:
    pg = plain_then_timescale
    url = pg.url("tsdb_adopt")
    ensure_database(url)
    said: list[str] = []
    apply_migrations(url, report=said.append)
    assert len(said) == 1 and said[0].startswith("installed but not preloaded"), said
    seed(url)
    with psycopg.connect(url) as conn:
        assert hypertables(conn) == set() and continuous_aggregates(conn) == set()
        plain_rollups = conn.execute(ROLLUPS).fetchall()
    before = snapshot(url)
    assert plain_rollups == before[2] and len(before[0]) == 8

    pg.settings["shared_preload_libraries"] = "timescaledb"
    pg.restart()

    # a unique index without the time column stops the conversion: its error is the one raised, and the
    # database is left exactly as it was (the extension too: it is created in the same transaction)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE UNIQUE INDEX adopt_blocker ON measurements (raw_id, device_id, metric_id)")
    with pytest.raises(
        psycopg.errors.DatabaseError, match=r'cannot create a unique index without the column "ts"'
    ):
        apply_migrations(url)
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone() == (
            0,
        )
        assert conn.execute("SELECT to_regclass('hourly_rollups_plain')").fetchone() == (None,)
        conn.execute("DROP INDEX adopt_blocker")
    assert snapshot(url) == before

    output = migrate_with_the_cli(url)
    assert "0 migration(s) applied" in output
    for line in (
        "timescaledb: extension created",
        "timescaledb: measurements: converted to a hypertable (8 rows moved into chunks)",
        "timescaledb: raw_messages: converted to a hypertable (8 rows moved into chunks)",
        "timescaledb: hourly_rollups: the plain table's rows are kept in hourly_rollups_plain",
        "timescaledb: hourly_rollups: now a continuous aggregate over measurements",
        "timescaledb: hourly_rollups: filled from measurements (2 rows)",
    ):
        assert line in output, output
    with psycopg.connect(url) as conn:
        assert hypertables(conn) == {"measurements", "raw_messages"}
        assert continuous_aggregates(conn) == {"hourly_rollups"}
        assert conn.execute(ROLLUPS).fetchall() == before[2]
        kept = conn.execute(ROLLUPS.replace("hourly_rollups", "hourly_rollups_plain")).fetchall()
        assert kept == plain_rollups
    assert snapshot(url) == before

    # late data after the conversion: the run's refresh recomputes the old hour in the aggregate
    with psycopg.connect(url, autocommit=True) as conn:
        late = ARRIVED + timedelta(hours=2)
        add_reading(conn, 100, late, ARRIVED - timedelta(minutes=5), -3.5)
        assert refresh_rollups(conn, late, late + timedelta(minutes=1)) == 1
        rollups = conn.execute(ROLLUPS).fetchall()
        assert rollups == conn.execute(AGGREGATE).fetchall()
        assert sum(r[3] for r in rollups) == 8

    said.clear()
    assert apply_migrations(url, report=said.append) == []
    assert said == []
