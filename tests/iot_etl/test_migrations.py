"""Migrations apply once, in order, are recorded, refuse edited files; the F2 seed matches the simulator."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import psycopg
import pytest

from iot_etl.migrate import SQL_DIR, MigrationError, apply_migrations, discover, ensure_database
from simulator.fleet import F2_CONTROLLERS, F2_SENSORS, SENSOR_MODELS
from tests.support.database import database_url, drop_database

pytestmark = pytest.mark.services


@pytest.fixture
def scratch_db() -> str:
    name = f"iot_scratch_{uuid.uuid4().hex[:8]}"
    yield database_url(name)
    drop_database(name)


def test_fresh_database_is_created_and_migrated_once(scratch_db: str) -> None:
    assert ensure_database(scratch_db) is True
    assert ensure_database(scratch_db) is False
    versions = [m.version for m in discover()]
    assert apply_migrations(scratch_db) == versions
    assert apply_migrations(scratch_db) == []
    with psycopg.connect(scratch_db) as conn:
        recorded = [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        tables = {
            t
            for (t,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
    assert recorded == versions
    assert {
        "raw_messages",
        "devices",
        "metrics",
        "measurements",
        "events",
        "rejected",
        "batches",
        "controllers",
        "connectors",
        "sensors",
        "datapoints",
    } <= tables


def test_an_edited_migration_is_refused(scratch_db: str, tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    ensure_database(scratch_db)
    apply_migrations(scratch_db, sql_dir)
    first = sorted(sql_dir.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\nCREATE TABLE edited_later (x int);\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply_migrations(scratch_db, sql_dir)


def test_a_failing_migration_leaves_nothing_recorded(scratch_db: str, tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    (sql_dir / "999_broken.sql").write_text("CREATE TABLE half_done (x int); SELECT * FROM no_such_table;")
    ensure_database(scratch_db)
    with pytest.raises(psycopg.errors.UndefinedTable):
        apply_migrations(scratch_db, sql_dir)
    with psycopg.connect(scratch_db) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations WHERE version = '999'").fetchone()[0] == 0
        assert conn.execute("SELECT to_regclass('half_done')").fetchone()[0] is None


def test_badly_named_migration_is_refused(tmp_path: Path) -> None:
    (tmp_path / "init.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match=r"NNN_description\.sql"):
        discover(tmp_path)


def test_f2_seed_equals_the_simulator_fleet(migrated_db: str) -> None:
    expected = {
        (
            c.mac,
            s.port,
            s.mode,
            s.component,
            s.model,
            s.modbus_address,
            spec.name,
            spec.offset,
            spec.length,
            spec.signed,
            spec.decimals,
            spec.unit,
            f"{s.port}.{s.component}.{spec.name}",
        )
        for c in F2_CONTROLLERS
        for s in F2_SENSORS
        for spec in SENSOR_MODELS.get(s.model, ())
    }
    with psycopg.connect(migrated_db) as conn:
        rows = set(
            conn.execute(
                """SELECT ct.mac, cn.port, cn.mode, se.component, se.model, se.modbus_address, dp.name,
                      dp.byte_offset,
                      dp.byte_length, dp.is_signed, dp.decimals, dp.unit, mt.name
               FROM controllers ct JOIN connectors cn USING (controller_id)
               JOIN sensors se USING (connector_id) JOIN datapoints dp USING (sensor_id)
               JOIN metrics mt USING (metric_id)"""
            ).fetchall()
        )
        sensors = set(
            conn.execute(
                """SELECT ct.mac, cn.port, cn.mode, se.component, se.model FROM controllers ct
               JOIN connectors cn USING (controller_id) JOIN sensors se USING (connector_id)"""
            ).fetchall()
        )
    assert rows == expected
    assert sensors == {
        (c.mac, s.port, s.mode, s.component, s.model) for c in F2_CONTROLLERS for s in F2_SENSORS
    }


def test_a_database_migrated_by_the_previous_release_is_still_valid(scratch_db: str, tmp_path: Path) -> None:
    """Databases recorded whole-file checksums, comments included; editing a comment must not break them."""
    import hashlib

    from iot_etl.migrate import RELEASED_CHECKSUMS

    ensure_database(scratch_db)
    apply_migrations(scratch_db)
    with psycopg.connect(scratch_db) as conn:
        for version, released in RELEASED_CHECKSUMS.items():
            conn.execute(
                "UPDATE schema_migrations SET checksum = %s WHERE version = %s", (released[0], version)
            )
    assert apply_migrations(scratch_db) == []
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    first = sorted(sql_dir.glob("001_*.sql"))[0]
    first.write_text("-- a comment added later\n" + first.read_text())
    assert apply_migrations(scratch_db, sql_dir) == []
    assert hashlib.sha256(first.read_bytes()).hexdigest() not in RELEASED_CHECKSUMS["001"]


def test_events_keep_only_the_indexes_a_query_reads(scratch_db: str, tmp_path: Path) -> None:
    """A database migrated by a release before 023 loses the indexes on events' device time and type (no
    query of the product reads them) and keeps its events and the indexes that the dashboards, checks,
    lineage and retention read."""
    earlier = tmp_path / "sql"
    earlier.mkdir()
    for path in SQL_DIR.glob("*.sql"):
        if path.name < "023":
            shutil.copy(path, earlier / path.name)
    ensure_database(scratch_db)
    apply_migrations(scratch_db, earlier)
    with psycopg.connect(scratch_db) as conn:
        (device_id,) = conn.execute(
            "INSERT INTO devices (device_key, kind) VALUES ('dev-1', 'event') RETURNING device_id"
        ).fetchone()
        conn.execute(
            """INSERT INTO events (device_id, event_id, schema, event_type, ts_server, raw_id, batch_id)
               VALUES (%s, 'e-1', 1, 'door', now(), 1, 1)""",
            (device_id,),
        )
        before = _index_names(conn, "events")
    assert {"events_ts_device_idx", "events_type_ts_idx"} <= before
    assert apply_migrations(scratch_db) == ["023"]
    with psycopg.connect(scratch_db) as conn:
        assert _index_names(conn, "events") == {
            "events_pkey",
            "events_device_ts_idx",
            "events_raw_idx",
            "events_ts_server_idx",
        }
        assert conn.execute("SELECT event_id FROM events").fetchall() == [("e-1",)]


def _index_names(conn: psycopg.Connection, table: str) -> set[str]:
    return {
        name for (name,) in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,))
    }
