"""End to end on the real services: simulator -> private Mosquitto (project config) -> listener -> Redis ->
sensor + in-process Dagster runs on a real instance -> PostgreSQL. The database must then hold exactly
what was sent (stored + rejected == published, values equal), and re-running changes nothing."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import redis
from dagster import instance_for_test

from dagster_project.definitions import defs
from ingest_listener import Listener
from iot_core.settings import Settings
from iot_core.streams import EntryId
from simulator.expected import REJECT_REASONS
from simulator.run import run_simulation
from tests.support import PrivateMosquitto
from tests.support.pipeline import SensorDriver
from tests.support.stored import expected_events, expected_readings, read_stored
from tests.support.waiting import wait_until

pytestmark = pytest.mark.services
PUBLISHED = 600


def snapshot(url: str) -> dict[str, object]:
    """Everything the pipeline wrote that must not change on a re-run (lineage batch ids included)."""
    with psycopg.connect(url) as conn:
        return {
            "measurements": sorted(
                conn.execute(
                    "SELECT device_id, metric_id, ts, value_num, value_text, raw_id, batch_id "
                    "FROM measurements"
                ).fetchall(),
                key=repr,
            ),
            "events": sorted(
                conn.execute(
                    "SELECT device_id, event_id, value_num, value_text, unit, ts_device, meta::text, raw_id, "
                    "batch_id FROM events"
                ).fetchall(),
                key=repr,
            ),
            "rejected": sorted(conn.execute("SELECT raw_id, item, stage, reason FROM rejected").fetchall()),
            "raw": conn.execute("SELECT count(*) FROM raw_messages").fetchone()[0],
        }


def test_simulated_mix_is_stored_or_rejected_exactly_and_reruns_change_nothing(
    clean_db: str, settings: Settings, tmp_path: Path
) -> None:
    with PrivateMosquitto() as broker:
        local = settings.model_copy(
            update={
                "mqtt_host": broker.host,
                "mqtt_port": broker.port,
                "listener_client_id": f"e2e-{uuid.uuid4().hex[:8]}",
            }
        )
        listener = Listener(local)
        listener.start()
        try:
            assert listener.wait_ready(10), "listener did not connect and subscribe"
            report = run_simulation(
                local, rate=1000, count=PUBLISHED, seed=7, bad_share=0.15, devices=4, keep_messages=True
            )
            client = redis.Redis.from_url(local.redis_url.get_secret_value())
            assert wait_until(lambda: client.xlen(local.stream_prefix) >= PUBLISHED, timeout_s=30)
        finally:
            assert listener.stop() == 0
    assert report.total == PUBLISHED and report.messages is not None
    sent = report.messages
    assert {m.kind for m in sent} == {"plain", "event", "f2"} and any(m.bad for m in sent)
    assert client.xlen(local.stream_prefix) == PUBLISHED, "the listener wrote each message exactly once"
    last_ms = EntryId.parse(client.xrevrange(local.stream_prefix, count=1)[0][0]).ms

    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        driver = SensorDriver(local, instance)
        requests = driver.drain(last_ms)
        first = snapshot(clean_db)

        stored = read_stored(clean_db)
        raw = stored.raw
        rejected = {i: r[0].reason for i, r in stored.rejections.items() if r[0].stage != "duplicate"}
        facts = set(stored.facts)
        duplicates = sum(r.stage == "duplicate" for rs in stored.rejections.values() for r in rs)

        bad = [m for m in sent if m.bad]
        good = [m for m in sent if not m.bad]
        assert duplicates == 0
        assert len(rejected) + len(facts) == PUBLISHED, "stored + rejected == published"
        assert not facts & set(rejected), "no message is both stored and rejected"
        # the archive holds every message sent, byte for byte (the same message may be sent more than once)
        assert Counter({key: len(ids) for key, ids in raw.items()}) == Counter(
            (m.topic, m.payload) for m in sent
        )
        assert {i for m in bad for i in raw[(m.topic, m.payload)]} == set(rejected)
        assert {i for m in good for i in raw[(m.topic, m.payload)]} == facts
        for m in bad:
            for raw_id in raw[(m.topic, m.payload)]:
                assert rejected[raw_id] == REJECT_REASONS[m.kind][m.reason], m
        assert stored.readings == expected_readings(good)
        assert stored.events == expected_events(good)

        # Re-running every range, then every whole hour (as a UI backfill does), changes nothing.
        for request in requests:
            driver.execute(request)
        assert snapshot(clean_db) == first
        job = defs.resolve_job_def("micro_batch_job")
        for hour in sorted({r.partition_key for r in requests}):
            assert job.execute_in_process(partition_key=hour, instance=instance).success
        assert snapshot(clean_db) == first
        with psycopg.connect(clean_db) as conn:
            assert conn.execute("SELECT count(DISTINCT run_id) FROM batches").fetchone()[0] == len(
                requests
            ) * 2 + len({r.partition_key for r in requests})
    assert datetime.now(UTC) > datetime.fromtimestamp(last_ms / 1000, UTC)
