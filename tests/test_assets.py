"""The Dagster side on real Redis and PostgreSQL: entries as the listener writes them -> database rows."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import psycopg
import pytest
import redis
from dagster import DagsterInstance

from iot_etl.settings import Settings
from tests.support.pipeline import SensorDriver
from tests.support.reference import REFERENCE_004_EVENT

pytestmark = pytest.mark.services

REFERENCE_EVENT = json.loads(REFERENCE_004_EVENT)


def xadd(settings: Settings, topic: str, payload: bytes) -> int:
    client = redis.Redis.from_url(settings.redis_url)
    entry = client.xadd(
        settings.stream_prefix,
        {"topic": topic, "payload": payload, "qos": "1", "retain": "0", "rx_us": str(time.time_ns() // 1000)},
    )
    return int(entry.split(b"-")[0])


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("raw_messages", "measurements", "events", "rejected")
        }


def test_window_lands_decodes_and_reruns_idempotently(clean_db: str, settings: Settings) -> None:
    xadd(settings, "devices/a1b2c3d4/temperature", "27.93 °C".encode())
    xadd(settings, "qs/v1/esp32-01/events", json.dumps(REFERENCE_EVENT).encode())
    xadd(settings, "devices/a1b2c3d4/humidity", b"\xff\xfe")
    last = xadd(settings, "nowhere/x", b"1")

    with DagsterInstance.ephemeral() as instance:
        driver = SensorDriver(settings, instance)
        requests = driver.drain(last)
        assert requests, "the sensor requested no run"
        first = counts(clean_db)
        assert first == {"raw_messages": 4, "measurements": 1, "events": 1, "rejected": 2}
        with psycopg.connect(clean_db) as conn:
            value, unit, raw_topic = conn.execute(
                """SELECT m.value_num, mt.unit, r.topic FROM measurements m JOIN metrics mt USING (metric_id)
                   JOIN raw_messages r USING (raw_id)"""
            ).fetchone()
            assert (value, unit, raw_topic) == (27.93, "°C", "devices/a1b2c3d4/temperature")
            event = conn.execute("SELECT event_id, value_num, unit, ts_device, meta FROM events").fetchone()
            assert event == (
                "esp32-01-1707523200000",
                23.5,
                "C",
                datetime(2024, 2, 10, tzinfo=UTC),
                {"sensor": "dht22", "location": "living_room"},
            )
            reasons = sorted(r for (r,) in conn.execute("SELECT reason FROM rejected"))
            assert reasons == ["not_utf8", "unknown_topic"]
            run_ids = {r for (r,) in conn.execute("SELECT run_id FROM batches")}
            assert run_ids <= {run.run_id for run in instance.get_runs()}

        for request in requests:  # the same ranges again
            driver.execute(request)
        assert counts(clean_db) == first
