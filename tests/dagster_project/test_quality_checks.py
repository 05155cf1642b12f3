"""The data-quality checks on real data: a closed hour in the stream, run through the real job."""

from __future__ import annotations

import json

import psycopg
import pytest
from dagster import AssetCheckSeverity, DagsterInstance

from iot_core.settings import Settings
from tests.support.hours import ClosedHour, check_results
from tests.support.reference import REFERENCE_004_EVENT

pytestmark = pytest.mark.services


def forget_last_seen(url: str) -> None:
    """Devices of earlier tests would count as silent: start from devices that never sent."""
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE devices SET last_seen = NULL")


def test_a_clean_hour_passes_every_check(clean_db: str, settings: Settings) -> None:
    forget_last_seen(clean_db)
    hour = ClosedHour(settings)
    for n in range(6):
        hour.add(3000 + n, f"devices/clean{n % 2}/temperature", f"{20 + n} °C")
    hour.add(3100, "qs/v1/esp32-01/events", REFERENCE_004_EVENT)
    with DagsterInstance.ephemeral() as instance:
        checks = check_results(hour.run(instance))
    assert {name: c.passed for name, c in checks.items()} == {
        "archive_complete": True,
        "reconciliation": True,
        "schema_pass_rate": True,
        "plausibility": True,
        "duplicates": True,
        "device_freshness": True,
    }
    assert checks["schema_pass_rate"].metadata["pass_rate"].value == 1.0
    assert checks["plausibility"].metadata["readings_with_range"].value == 6
    assert checks["device_freshness"].metadata["silent_devices"].value == 0


def test_rejects_duplicates_and_implausible_values_fail_their_checks(
    clean_db: str, settings: Settings
) -> None:
    forget_last_seen(clean_db)
    hour = ClosedHour(settings)
    for n in range(4):
        hour.add(3000 + n, "devices/bad1/temperature", f"{21 + n}")  # plausible
    hour.add(3010, "devices/bad1/temperature", "150")  # implausible: kept and counted
    hour.add(3011, "devices/bad1/humidity", b"\xff\xfe")  # not UTF-8
    hour.add(3012, "devices/bad1/humidity", b"\xff\xfd")
    hour.add(3012.5, "devices/bad1/humidity", b"\xff\xfc")
    hour.add(3013, "nowhere/x", "1")  # unknown topic
    hour.add(3020, "qs/v1/esp32-01/events", REFERENCE_004_EVENT)
    hour.add(3021, "qs/v1/esp32-01/events", REFERENCE_004_EVENT)  # a redelivery
    with DagsterInstance.ephemeral() as instance:
        checks = check_results(hour.run(instance))
    assert checks["reconciliation"].passed  # every message is stored or rejected

    schema = checks["schema_pass_rate"]
    assert not schema.passed and schema.severity == AssetCheckSeverity.ERROR  # 4 of 11 > 30 %
    assert schema.metadata["rejected"].value == 4 and schema.metadata["raw"].value == 11
    assert schema.metadata["rejected_plain"].value == 3 and schema.metadata["rejected_unknown"].value == 1
    table = schema.metadata["rejects"].value
    assert "not_utf8" in table and "unknown_topic" in table and "nowhere/x" in table

    plausible = checks["plausibility"]
    assert not plausible.passed and plausible.severity == AssetCheckSeverity.ERROR  # 1 of 5 > 5 %
    assert plausible.metadata["implausible"].value == 1
    assert "temperature" in plausible.metadata["implausible_by_metric"].value
    with psycopg.connect(clean_db) as conn:
        (kept,) = conn.execute(
            "SELECT count(*) FROM implausible_measurements WHERE value_num = 150"
        ).fetchone()
        (stored,) = conn.execute("SELECT count(*) FROM measurements").fetchone()
    assert kept == 1 and stored == 5

    dup = checks["duplicates"]
    assert not dup.passed and dup.severity == AssetCheckSeverity.WARN  # 1 of 11: above 5 %, below 25 %
    assert dup.metadata["duplicates"].value == 1 and dup.metadata["duplicates_event"].value == 1


def test_a_device_that_went_quiet_is_listed_as_silent(clean_db: str, settings: Settings) -> None:
    forget_last_seen(clean_db)
    hour = ClosedHour(settings)
    hour.add(300, "devices/quiet1/temperature", "20")  # 55 minutes before the hour's end
    hour.add(3300, "devices/chatty1/temperature", "21")
    hour.add(
        3305,
        "qs/v1/esp32-09/events",
        json.dumps({**json.loads(REFERENCE_004_EVENT), "device_id": "esp32-09"}),
    )
    with DagsterInstance.ephemeral() as instance:
        checks = check_results(hour.run(instance))
    fresh = checks["device_freshness"]
    assert not fresh.passed and fresh.severity == AssetCheckSeverity.WARN
    assert "quiet1" in fresh.description and "chatty1" not in fresh.description
    assert fresh.metadata["silent_devices"].value == 1
    assert 290 <= fresh.metadata["newest_reading_age_s"].value <= 300
    with psycopg.connect(clean_db) as conn:
        seen = dict(
            conn.execute("SELECT device_key, last_seen FROM devices WHERE last_seen IS NOT NULL").fetchall()
        )
    assert set(seen) == {"quiet1", "chatty1", "esp32-09"}
