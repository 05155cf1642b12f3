"""The Dagster side on real Redis and PostgreSQL: entries as the listener writes them -> database rows."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
import redis
from dagster import DagsterInstance, build_sensor_context

from dagster_project.definitions import defs
from dagster_project.defs.ingest.sensors import run_request
from dagster_project.defs.run_window import configured_range
from dagster_project.lib.windows import HOUR_MS, Window
from iot_core.settings import Settings
from iot_core.streams import stream_for_topic, stream_names
from tests.support.pipeline import SensorDriver
from tests.support.reference import REFERENCE_004_EVENT

pytestmark = pytest.mark.services

REFERENCE_EVENT = json.loads(REFERENCE_004_EVENT)


def xadd(settings: Settings, topic: str, payload: bytes) -> int:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
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
    redis.Redis.from_url(settings.redis_url.get_secret_value()).xadd(
        settings.stream_prefix, {"written_by": "someone else"}
    )
    last = xadd(settings, "nowhere/x", b"1")

    with DagsterInstance.ephemeral() as instance:
        driver = SensorDriver(settings, instance)
        requests = driver.drain(last)
        assert requests, "the sensor requested no run"
        first = counts(clean_db)
        assert first == {"raw_messages": 5, "measurements": 1, "events": 1, "rejected": 3}
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
                "°C",  # sent as "C": stored in its canonical spelling
                datetime(2024, 2, 10, tzinfo=UTC),
                {"sensor": "dht22", "location": "living_room"},
            )
            reasons = sorted(r for (r,) in conn.execute("SELECT reason FROM rejected"))
            assert reasons == ["malformed_entry", "not_utf8", "unknown_topic"]
            run_ids = {r for (r,) in conn.execute("SELECT run_id FROM batches")}
            assert run_ids <= {run.run_id for run in instance.get_runs()}

        for request in requests:  # the same ranges again
            driver.execute(request)
        assert counts(clean_db) == first


def test_hour_closing_run_finds_entries_a_failed_window_never_archived(
    clean_db: str, settings: Settings
) -> None:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    seconds, _ = client.time()
    hour_end_ms = (int(seconds) // 3600) * 3_600_000  # the previous hour, closed
    for n in range(3):  # entries early in that hour, in windows whose runs "failed"
        client.xadd(
            settings.stream_prefix,
            {
                "topic": f"devices/gap{n}/temperature",
                "payload": "20",
                "qos": "1",
                "retain": "0",
                "rx_us": str((hour_end_ms - 3_000_000) * 1000),
            },
            id=f"{hour_end_ms - 3_000_000}-{n}",
        )
    closing = Window(hour_end_ms - settings.window_ms, hour_end_ms)  # only the hour's last window ran
    job = defs.resolve_job_def("micro_batch_job")
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            run_config=run_request(closing).run_config, partition_key=closing.partition_key, instance=instance
        )
        [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "archive_complete"]
        assert not check.passed
        assert check.metadata["missing_ranges"].value == 1

        backfill = job.execute_in_process(
            partition_key=closing.partition_key, instance=instance
        )  # whole hour
        checks = {c.check_name: c.passed for c in backfill.get_asset_check_evaluations()}
        assert checks["archive_complete"] and checks["reconciliation"]
    assert counts(clean_db)["measurements"] == 3


def test_a_run_for_a_window_that_has_not_closed_is_refused(clean_db: str, settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())

    def now_ms() -> int:
        seconds, micros = client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    if HOUR_MS - now_ms() % HOUR_MS < 30_000:  # the next hour is not a partition yet: wait for it
        time.sleep((HOUR_MS - now_ms() % HOUR_MS) / 1000 + 0.5)
    start = now_ms() // settings.window_ms * settings.window_ms
    future = Window(start, start - start % HOUR_MS + HOUR_MS)  # ends with the hour, > 30 s away
    job = defs.resolve_job_def("micro_batch_job")
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            run_config=run_request(future).run_config,
            partition_key=future.partition_key,
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    assert "runs only process closed windows" in str(result.all_events)
    assert counts(clean_db)["raw_messages"] == 0


def test_a_run_requested_before_its_window_closes_lands_what_arrives_while_it_waits(
    clean_db: str, settings: Settings
) -> None:
    """Runs are requested up to the lead before the close: they land what has closed meanwhile, and the
    window's last entries, written while the run waits, are archived and decoded as well."""
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    policy_lead_ms = min(settings.sensor_lead_ms, settings.window_ms // 2)
    assert policy_lead_ms >= 3000, "the test settings' window leaves room to start early"

    def now_ms() -> int:
        seconds, micros = client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def to_close(window_end_ms: int) -> int:
        return window_end_ms + settings.window_grace_ms - now_ms()

    end = (now_ms() // settings.window_ms + 1) * settings.window_ms
    while to_close(end) > policy_lead_ms - 500 or to_close(end) < 2500:
        if to_close(end) < 2500:
            end += settings.window_ms
        time.sleep(0.05)
    window = Window(end - settings.window_ms, end)
    written: list[int] = []

    def write_until_closed() -> None:
        while now_ms() < end + 300:
            written.append(xadd(settings, "devices/early/temperature", b"21.5"))
            time.sleep(0.05)

    writer = threading.Thread(target=write_until_closed)
    writer.start()
    job = defs.resolve_job_def("micro_batch_job")
    try:
        with DagsterInstance.ephemeral() as instance:
            result = job.execute_in_process(
                run_config=run_request(window).run_config,
                partition_key=window.partition_key,
                instance=instance,
            )
    finally:
        writer.join()
    [land] = [m for m in result.asset_materializations_for_node("raw_messages")]
    assert land.metadata["waited_for_close_ms"].value > 1000, "the run started before the close"
    in_window = sum(1 for ms in written if window.start_ms <= ms < window.end_ms)
    assert in_window > 20
    with psycopg.connect(clean_db) as conn:
        landed = conn.execute("SELECT count(*) FROM raw_messages").fetchone()[0]
        stored = conn.execute("SELECT count(*) FROM measurements").fetchone()[0]
    assert landed == in_window and stored == in_window, "every entry of the window, none after it"


def test_sharded_streams_are_all_read(clean_db: str, settings: Settings) -> None:
    sharded = settings.model_copy(update={"stream_shards": 3})
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    devices = [f"shard{n}" for n in range(12)]
    for device in devices:
        topic = f"devices/{device}/temperature"
        client.xadd(
            stream_for_topic(topic, sharded.stream_prefix, 3),
            {
                "topic": topic,
                "payload": b"1.5",
                "qos": "1",
                "retain": "0",
                "rx_us": str(time.time_ns() // 1000),
            },
        )
    assert len({stream_for_topic(f"devices/{d}/t", sharded.stream_prefix, 3) for d in devices}) == 3
    seconds, micros = client.time()
    with DagsterInstance.ephemeral() as instance:
        SensorDriver(sharded, instance).drain(int(seconds) * 1000 + int(micros) // 1000)
    with psycopg.connect(clean_db) as conn:
        streams = {s for (s,) in conn.execute("SELECT DISTINCT stream FROM raw_messages")}
        stored = {d for (d,) in conn.execute("SELECT device_key FROM devices WHERE device_key LIKE 'shard%'")}
    assert streams == set(stream_names(sharded.stream_prefix, 3))
    assert stored == set(devices) and counts(clean_db)["measurements"] == len(devices)


def test_the_sensor_runs_again_a_closed_window_that_was_never_processed(
    clean_db: str, settings: Settings
) -> None:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    seconds, _ = client.time()
    lost_ms = (int(seconds) // 3600) * 3_600_000 - 3_000_000  # in the previous hour, its run "died"
    client.xadd(
        settings.stream_prefix,
        {"topic": "devices/healme/temperature", "payload": "21", "qos": "1", "retain": "0", "rx_us": "0"},
        id=f"{lost_ms}-0",
    )
    healing = settings.model_copy(update={"sensor_heal_after_s": 10})
    now_window_ms = int(seconds) * 1000 // settings.window_ms * settings.window_ms
    with DagsterInstance.ephemeral() as instance:
        driver = SensorDriver(healing, instance)
        driver.cursor = json.dumps({"next_ms": now_window_ms})
        requests = driver.tick()
        heals = [r for r in requests if r.tags["iot/kind"] == "heal"]
        assert len(heals) == 1 and heals[0].partition_key == Window(lost_ms, lost_ms + 1).partition_key
        assert driver.tick() == [] or all(r.tags["iot/kind"] != "heal" for r in driver.tick())
        driver.execute(heals[0])
    assert counts(clean_db)["measurements"] == 1
    with DagsterInstance.ephemeral() as instance:
        driver = SensorDriver(healing, instance)
        driver.cursor = json.dumps({"next_ms": now_window_ms})
        assert all(r.tags["iot/kind"] != "heal" for r in driver.tick()), "a processed range is not run again"


def test_the_sensor_heals_no_window_a_queued_or_started_run_still_holds(
    clean_db: str, settings: Settings
) -> None:
    from dagster import DagsterRun, DagsterRunStatus

    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    seconds, _ = client.time()
    lost_ms = (int(seconds) // 3600) * 3_600_000 - 3_000_000  # in the previous hour
    client.xadd(
        settings.stream_prefix,
        {"topic": "devices/healme/temperature", "payload": "21", "qos": "1", "retain": "0", "rx_us": "0"},
        id=f"{lost_ms}-0",
    )
    healing = settings.model_copy(update={"sensor_heal_after_s": 10})
    now_window_ms = int(seconds) * 1000 // settings.window_ms * settings.window_ms
    window_start = lost_ms // settings.window_ms * settings.window_ms
    live = run_request(Window(window_start, window_start + settings.window_ms))
    with DagsterInstance.ephemeral() as instance:
        run = instance.add_run(
            DagsterRun(
                job_name="micro_batch_job",
                run_id=str(uuid.uuid4()),
                run_config=live.run_config,
                tags={**live.tags, "dagster/partition": str(live.partition_key)},
                status=DagsterRunStatus.STARTED,
            )
        )
        driver = SensorDriver(healing, instance)
        driver.cursor = json.dumps({"next_ms": now_window_ms})
        assert [r for r in driver.tick() if r.tags["iot/kind"] == "heal"] == [], "the live run holds it"
        instance.report_run_failed(run)
        heals = [r for r in driver.tick() if r.tags["iot/kind"] == "heal"]
    assert len(heals) == 1
    configured = configured_range(heals[0].run_config)
    assert configured is not None
    start_ms, end_ms = configured
    assert start_ms <= lost_ms < end_ms
    assert end_ms % settings.window_ms == 0


def test_closed_hours_plot_their_own_totals_and_a_backfill_reports_each_hour(
    clean_db: str, settings: Settings
) -> None:
    from dagster import AssetKey

    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    seconds, _ = client.time()
    this_hour_ms = (int(seconds) // 3600) * 3_600_000
    hours = {this_hour_ms - 2 * HOUR_MS: 2, this_hour_ms - HOUR_MS: 3}  # two closed hours: 2 and 3 messages
    for start_ms, n in hours.items():
        for i in range(n):
            client.xadd(
                settings.stream_prefix,
                {"topic": f"devices/hr{i}/t", "payload": "1", "qos": "1", "retain": "0", "rx_us": "0"},
                id=f"{start_ms + 1000 + i}-0",
            )
    keys = [Window(start, start + HOUR_MS).partition_key for start in hours]
    job = defs.resolve_job_def("micro_batch_job")
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[1],
            },
        )
        assert result.success
        records = instance.fetch_materializations(AssetKey("telemetry"), limit=20).records
        per_hour = {
            r.partition_key: r.asset_materialization.metadata["raw_messages"].value
            for r in records
            if "raw_messages" in r.asset_materialization.metadata
        }
    assert per_hour == {keys[0]: 2, keys[1]: 3}, per_hour


@pytest.mark.parametrize("service", ["redis", "database"])
def test_an_unreachable_service_is_one_skip_line_per_tick_and_keeps_the_cursor(
    clean_db: str, settings: Settings, service: str
) -> None:
    from pydantic import SecretStr

    from tests.support.ports import free_port

    dead = {
        "redis": {"redis_url": SecretStr(f"redis://127.0.0.1:{free_port()}/0")},
        "database": {"database_url": SecretStr(f"postgresql://postgres@127.0.0.1:{free_port()}/none")},
    }[service]
    with DagsterInstance.ephemeral() as instance:
        driver = SensorDriver(settings.model_copy(update=dead), instance)
        context = build_sensor_context(
            instance=instance,
            cursor=driver.cursor,
            resources={k: driver.resources[k] for k in ("redis", "database", "policy")},
        )
        result = driver.sensor(context)
    assert not result.run_requests
    reason = result.skip_reason.skip_message
    assert "\n" not in reason and "unreachable" in reason and "127.0.0.1" in reason, reason
    assert result.cursor is None  # a fresh sensor's start point is decided once both answer
