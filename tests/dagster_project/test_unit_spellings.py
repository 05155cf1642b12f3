"""Units stored in one spelling: `C` and `°C` of a metric are one metric id, an event's unit is canonical,
a message stored before under another spelling moves to the canonical metric when processed again, and
sql/020 renames the metrics of an existing database without touching its facts."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from dagster import DagsterInstance

from iot_core.formats.units import canonical_unit
from iot_core.settings import Settings
from iot_etl.migrate import SQL_DIR, apply_migrations, ensure_database
from tests.support.database import database_url, drop_database
from tests.support.hours import ClosedHour
from tests.support.reference import REFERENCE_004_EVENT
from tests.support.unit_spellings import SPELLINGS

pytestmark = pytest.mark.services


def test_the_sql_function_spells_as_the_python_table(migrated_db: str) -> None:
    with psycopg.connect(migrated_db) as conn:
        in_sql = [conn.execute("SELECT canonical_unit(%s::text)", (u,)).fetchone()[0] for u in SPELLINGS]
    assert in_sql == [canonical_unit(u) for u in SPELLINGS]


def _readings(conn: psycopg.Connection, device: str) -> list[tuple]:
    return conn.execute(
        """SELECT m.metric_id, m.name, m.unit, x.value_num FROM measurements x
           JOIN devices d USING (device_id) JOIN metrics m USING (metric_id)
           WHERE d.device_key = %s ORDER BY x.ts""",
        (device,),
    ).fetchall()


def test_c_and_degree_c_of_one_metric_are_one_metric_id(clean_db: str, settings: Settings) -> None:
    hour = ClosedHour(settings)
    topic = "devices/units-1/temperature"
    hour.add(10, topic, json.dumps({"value": 21.5, "unit": "C"}))
    hour.add(20, topic, "27.93 °C")
    hour.add(30, topic, json.dumps({"value": 22.0, "unit": " degC"}))
    hour.add(40, "devices/units-1/pressure", "1013.2 hPa")
    hour.add(50, "devices/units-1/pressure", json.dumps({"value": 101320, "unit": "Pa"}))
    hour.add(60, "qs/v1/esp32-01/events", REFERENCE_004_EVENT)  # "unit": "C"
    with DagsterInstance.ephemeral() as instance:
        assert hour.run(instance).success
    with psycopg.connect(clean_db) as conn:
        readings = _readings(conn, "units-1")
        (event_unit,) = conn.execute("SELECT unit FROM events").fetchone()
        payloads = [bytes(p) for (p,) in conn.execute("SELECT payload FROM raw_messages ORDER BY raw_id")]
    temperature = [r for r in readings if r[1] == "temperature"]
    assert [r[3] for r in temperature] == [21.5, 27.93, 22.0]
    assert {(r[0], r[2]) for r in temperature} == {(temperature[0][0], "°C")}
    # another scale is another unit: no value is converted
    assert [(r[2], r[3]) for r in readings if r[1] == "pressure"] == [("hPa", 1013.2), ("Pa", 101320.0)]
    assert event_unit == "°C"
    # the archive keeps what was sent
    assert json.loads(payloads[0]) == {"value": 21.5, "unit": "C"}
    assert b'"unit": "C"' in payloads[-1]


def test_an_event_stored_before_in_another_spelling_and_sent_again_is_a_duplicate(
    clean_db: str, settings: Settings
) -> None:
    earlier, later = ClosedHour(settings, hours_back=2), ClosedHour(settings, hours_back=1)
    earlier.add(10, "qs/v1/esp32-01/events", REFERENCE_004_EVENT)
    with DagsterInstance.ephemeral() as instance:
        assert earlier.run(instance).success
        with psycopg.connect(clean_db) as conn:  # as a release before sql/020 stored it
            conn.execute("UPDATE events SET unit = 'C'")
        later.add(10, "qs/v1/esp32-01/events", REFERENCE_004_EVENT)
        assert later.run(instance).success
    with psycopg.connect(clean_db) as conn:
        rejected = conn.execute("SELECT raw_id, stage, reason FROM rejected").fetchall()
    assert rejected == [(2, "duplicate", "duplicate_device and event_id")]  # not a duplicate_conflict


def test_a_message_stored_under_a_respelled_metric_moves_to_the_canonical_one(
    clean_db: str, settings: Settings
) -> None:
    hour = ClosedHour(settings, hours_back=30)  # older than the rollups' parts: recomputed from readings
    hour.add(10, "devices/units-2/respelled_temp", json.dumps({"value": 19.5, "unit": "C"}))
    hour.add(20, "devices/units-2/respelled_temp", "20.5 °C")
    with DagsterInstance.ephemeral() as instance:
        assert hour.run(instance).success
        with psycopg.connect(clean_db) as conn:  # a database that stored both spellings before sql/020
            (legacy,) = conn.execute(
                "INSERT INTO metrics (name, unit) VALUES ('respelled_temp', 'C') RETURNING metric_id"
            ).fetchone()
            conn.execute("UPDATE measurements SET metric_id = %s WHERE raw_id = 1", (legacy,))
            conn.execute(
                "UPDATE hourly_rollups SET count = 1, min_value = 20.5, avg_value = 20.5"
                " WHERE metric_id <> %s",
                (legacy,),
            )
            conn.execute(
                """INSERT INTO hourly_rollups (hour, device_id, metric_id, count, min_value, max_value,
                                               avg_value, last_value, last_ts)
                   SELECT hour, device_id, %s, 1, 19.5, 19.5, 19.5, 19.5, last_ts FROM hourly_rollups""",
                (legacy,),
            )
            assert {r[2] for r in _readings(conn, "units-2")} == {"C", "°C"}
            series = conn.execute(
                "SELECT DISTINCT name, unit FROM metric_series WHERE name = 'respelled_temp'"
            ).fetchall()
            assert series == [("respelled_temp", "°C")]
        assert hour.run(instance).success  # the hour processed again (a backfill)
    with psycopg.connect(clean_db) as conn:
        readings = _readings(conn, "units-2")
        rollups = conn.execute("SELECT metric_id, count, min_value, max_value FROM hourly_rollups").fetchall()
    assert [(r[2], r[3]) for r in readings] == [("°C", 19.5), ("°C", 20.5)]
    assert rollups == [(readings[0][0], 2, 19.5, 20.5)]


@pytest.fixture
def scratch_db() -> Iterator[str]:
    name = f"iot_units_{uuid.uuid4().hex[:8]}"
    yield database_url(name)
    drop_database(name)


def test_the_migration_renames_metrics_and_ranges_not_facts(scratch_db: str, tmp_path: Path) -> None:
    before = tmp_path / "sql"
    before.mkdir()
    for path in SQL_DIR.glob("*.sql"):
        if path.name < "020":
            shutil.copy(path, before)
    ensure_database(scratch_db)
    apply_migrations(scratch_db, before)
    with psycopg.connect(scratch_db) as conn:
        ids = {
            (name, unit): conn.execute(
                "INSERT INTO metrics (name, unit) VALUES (%s, %s) RETURNING metric_id", (name, unit)
            ).fetchone()[0]
            for name, unit in [
                ("only_c", "C"),
                ("both", "C"),
                ("both", "°C"),
                ("two", "degC"),
                ("two", "celsius"),
                ("air", "hPa"),
                ("air", "Pa"),
            ]
        }
        conn.execute(
            "INSERT INTO metric_ranges (name, unit, min_value, max_value) "
            "VALUES ('only_c', 'degC', -10, 50), ('both', 'C', 0, 1), ('both', '°C', 0, 2)"
        )
    assert apply_migrations(scratch_db)[0] == "020"
    with psycopg.connect(scratch_db) as conn:
        after = dict(
            conn.execute(
                "SELECT metric_id, unit FROM metrics WHERE metric_id = ANY(%s)", (list(ids.values()),)
            ).fetchall()
        )
        series = dict(
            conn.execute(
                "SELECT metric_id, unit FROM metric_series WHERE metric_id = ANY(%s)", (list(ids.values()),)
            ).fetchall()
        )
        ranges = conn.execute(
            "SELECT name, unit, max_value FROM metric_ranges WHERE name IN ('only_c', 'both') ORDER BY 1, 2"
        ).fetchall()
        (seeded,) = conn.execute(
            "SELECT count(*) FROM metrics WHERE unit <> canonical_unit(unit) AND name LIKE 'J%'"
        ).fetchone()
    assert after == {
        ids["only_c", "C"]: "°C",  # renamed: no metric of that name had °C
        ids["both", "C"]: "C",  # both spellings stored: kept, drawn as one series
        ids["both", "°C"]: "°C",
        ids["two", "degC"]: "°C",  # the older of two spellings takes the canonical one
        ids["two", "celsius"]: "celsius",
        ids["air", "hPa"]: "hPa",
        ids["air", "Pa"]: "Pa",
    }
    assert series == {metric_id: canonical_unit(unit) for metric_id, unit in after.items()}
    assert ranges == [("both", "C", 1.0), ("both", "°C", 2.0), ("only_c", "°C", 50.0)]
    assert seeded == 0
