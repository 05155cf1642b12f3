"""Parallel shards on real Redis and PostgreSQL: each shard's windows are processed by runs of their own,
which read and record only their shard; a shard that is behind or failing holds back and heals only
itself; the hour's checks cover every shard; compaction trims each shard only below its own archive."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import redis
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

from dagster_project.defs.ingest.sensors import run_request
from dagster_project.defs.ingest.shards import SHARD_TAG, Scope
from dagster_project.defs.quality.checks import archive_complete, reconciliation
from dagster_project.defs.quality.hour_check import CheckedHour
from dagster_project.defs.resources import RedisStreamsResource, resources_from_settings
from dagster_project.defs.run_window import configured_shard
from dagster_project.lib.batch import land_window, window_batch
from dagster_project.lib.compaction import trim_stream
from dagster_project.lib.raw_entries import raw_row
from dagster_project.lib.windows import HOUR_MS, Window, floor_to
from iot_core.settings import Settings
from iot_core.streams import stream_names
from iot_etl.status_retention import oldest_unarchived_ms
from tests.support.pipeline import SensorDriver, execute_request
from tests.support.shards import device_of_shard, redis_ms, sharded_settings, xadd

pytestmark = pytest.mark.services

SHARDS = 3


@pytest.fixture
def sharded(settings: Settings) -> Iterator[Settings]:
    with sharded_settings(settings, SHARDS, window_seconds=5) as value:
        yield value


def scope(settings: Settings, shard: int) -> Scope:
    return Scope(shard, (stream_names(settings.stream_prefix, settings.stream_shards)[shard],))


def query(settings: Settings, sql: str) -> list[tuple]:
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        return conn.execute(sql).fetchall()


def test_each_shards_windows_are_runs_of_their_own_that_read_and_record_only_their_shard(
    sharded: Settings,
) -> None:
    devices = [device_of_shard(sharded, n, name) for n in range(SHARDS) for name in ("a", "b")]
    last = max(xadd(sharded, device) for device in devices)
    with DagsterInstance.ephemeral() as instance:
        driver = SensorDriver(sharded, instance)
        requests = driver.drain(last)
        cursor = json.loads(driver.cursor or "{}")
    assert {r.tags[SHARD_TAG] for r in requests} == {"0", "1", "2"}
    assert all(configured_shard(r.run_config) == int(r.tags[SHARD_TAG]) for r in requests)
    assert sorted(cursor["shards"]) == ["0", "1", "2"]
    streams = stream_names(sharded.stream_prefix, SHARDS)
    batches = query(sharded, "SELECT batch_id, shard, streams, raw_count FROM batches WHERE raw_count > 0")
    assert {shard for _, shard, _, _ in batches} == {0, 1, 2}
    assert all(list(names) == [streams[shard]] for _, shard, names, _ in batches), batches
    # every raw message was landed and decoded by a batch of its own shard
    mixed = query(
        sharded,
        """SELECT count(*) FROM raw_messages r JOIN batches b USING (batch_id)
           WHERE r.stream <> b.streams[1]""",
    )
    assert mixed == [(0,)]
    facts = query(
        sharded,
        """SELECT count(*), count(*) FILTER (WHERE r.stream = lb.streams[1])
           FROM measurements m JOIN raw_messages r USING (raw_id)
                JOIN batches lb ON lb.batch_id = m.batch_id""",
    )
    assert facts == [(6, 6)], "each measurement was stored by its own shard's run"


def wait_into_the_hour(settings: Settings, seconds: int) -> int:
    """Redis's clock once it is at least `seconds` into its hour (so that open-hour windows have closed)."""
    while (now := redis_ms(settings)) % HOUR_MS < seconds * 1000:
        time.sleep(1)
    return now


def test_a_shard_with_its_run_in_flight_holds_back_only_its_own_windows(sharded: Settings) -> None:
    now = wait_into_the_hour(sharded, 40)
    start = max(floor_to(now - 30_000, sharded.window_ms), floor_to(now, HOUR_MS))
    for n in range(SHARDS):
        xadd(sharded, device_of_shard(sharded, n), at_ms=start + 1000)
    busy = run_request(Window(start - sharded.window_ms, start), scope=scope(sharded, 1))
    with DagsterInstance.ephemeral() as instance:
        instance.add_run(
            DagsterRun(
                job_name="micro_batch_job",
                run_id=str(uuid.uuid4()),
                run_config=busy.run_config,
                tags={**busy.tags, "dagster/partition": str(busy.partition_key)},
                status=DagsterRunStatus.STARTED,
            )
        )
        driver = SensorDriver(sharded, instance)
        driver.cursor = json.dumps({"next_ms": start})
        requests = driver.tick()
        cursor = json.loads(driver.cursor or "{}")
    assert {r.tags[SHARD_TAG] for r in requests} == {"0", "2"}, "shard 1 waits for its own run only"
    assert cursor["shards"]["1"]["next_ms"] == start
    assert cursor["shards"]["0"]["next_ms"] > start and cursor["shards"]["2"]["next_ms"] > start
    assert cursor["next_ms"] == start


def test_a_shards_window_that_was_never_processed_is_healed_for_that_shard_only(sharded: Settings) -> None:
    hour = floor_to(redis_ms(sharded), HOUR_MS)
    lost_ms = hour - 50 * 60_000  # in the previous hour
    window = Window(
        floor_to(lost_ms, sharded.window_ms), floor_to(lost_ms, sharded.window_ms) + sharded.window_ms
    )
    for n in range(SHARDS):
        xadd(sharded, device_of_shard(sharded, n), at_ms=lost_ms)
    healing = sharded.model_copy(update={"sensor_heal_after_s": 10})
    resources = resources_from_settings(healing)
    with DagsterInstance.ephemeral() as instance:
        for n in (0, 2):  # shard 1's run of the window "died"
            assert execute_request(run_request(window, scope=scope(healing, n)), instance, resources).success
        driver = SensorDriver(healing, instance)
        now_window = floor_to(redis_ms(healing), healing.window_ms)
        driver.cursor = json.dumps({"next_ms": now_window})
        heals = [r for r in driver.tick() if r.tags["iot/kind"] == "heal"]
        assert [r.tags[SHARD_TAG] for r in heals] == ["1"]
        assert execute_request(heals[0], instance, resources).success
        assert [r for r in driver.tick() if r.tags["iot/kind"] == "heal"] == []
    assert query(healing, "SELECT count(*) FROM measurements") == [(3,)]


def streams_of(settings: Settings) -> RedisStreamsResource:
    """The streams resource outside a run (the code location's reads its URL from the environment)."""
    return RedisStreamsResource(
        url=settings.redis_url.get_secret_value(),
        stream_prefix=settings.stream_prefix,
        shards=settings.stream_shards,
    )


def land_only(settings: Settings, window: Window, shard: int) -> None:
    """What a run of `shard` does before it decodes: the window archived in a batch of that shard."""
    stream = stream_names(settings.stream_prefix, settings.stream_shards)[shard]
    redis_resource = streams_of(settings)
    pages = ([raw_row(stream, i, f) for i, f in page] for page in redis_resource.read_range(stream, window))
    info = window_batch(f"in-flight-{uuid.uuid4()}", window.partition_key, window, [stream], None, shard)
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        land_window(conn, info, pages)


def checks_of(settings: Settings, instance: DagsterInstance, window: Window, shard: int) -> dict:
    result = execute_request(
        run_request(window, scope=scope(settings, shard)), instance, resources_from_settings(settings)
    )
    assert result.success
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def test_the_hours_checks_in_a_shards_run_judge_only_as_far_as_every_shard_is_processed(
    sharded: Settings,
) -> None:
    hour = floor_to(redis_ms(sharded), HOUR_MS) - HOUR_MS  # the previous hour, closed
    last = Window(hour + HOUR_MS - sharded.window_ms, hour + HOUR_MS)
    early = Window(hour, hour + sharded.window_ms)
    for n in range(SHARDS):
        xadd(sharded, device_of_shard(sharded, n), at_ms=early.start_ms + 100)
        xadd(sharded, device_of_shard(sharded, n), at_ms=last.start_ms + 100)
    with DagsterInstance.ephemeral() as instance:
        for n in range(SHARDS):
            checks_of(sharded, instance, early, n)
        checks_of(sharded, instance, last, 2)
        land_only(sharded, last, 1)  # shard 1's run of the hour's last window is still decoding
        # judged whole now, the hour would count shard 1's archived messages as unaccounted
        with psycopg.connect(sharded.database_url.get_secret_value()) as conn:
            quality = resources_from_settings(sharded)["quality"]
            whole = CheckedHour(Window(hour, hour + HOUR_MS), conn, quality, None, "reconciliation")  # ty: ignore[invalid-argument-type]
            assert not reconciliation.body(whole).passed
        checks = checks_of(sharded, instance, last, 0)
        assert checks["reconciliation"].passed, "shard 1's window in flight is not judged yet"
        assert checks["reconciliation"].metadata["raw"].value == 3, "the early windows, up to shard 1's gap"
        checks = checks_of(sharded, instance, last, 1)  # the last shard to close the hour judges it whole
    assert checks["reconciliation"].passed and checks["reconciliation"].metadata["raw"].value == 6
    assert checks["archive_complete"].passed
    assert checks["archive_complete"].metadata["checked"].value == Window(hour, hour + HOUR_MS).label


def test_a_window_archived_by_one_shard_is_not_archived_for_another(sharded: Settings) -> None:
    hour = floor_to(redis_ms(sharded), HOUR_MS) - HOUR_MS
    window = Window(hour + 60_000, hour + 60_000 + sharded.window_ms)
    for n in (0, 1):
        xadd(sharded, device_of_shard(sharded, n), at_ms=window.start_ms)
    land_only(sharded, window, 0)
    resources = resources_from_settings(sharded)
    with psycopg.connect(sharded.database_url.get_secret_value()) as conn:
        hour_window = Window(hour, hour + HOUR_MS)
        checked = CheckedHour(
            hour_window, conn, resources["quality"], streams_of(sharded), "archive_complete"
        )
        result = archive_complete.body(checked)
    assert not result.passed and result.metadata["missing_ranges"].value == 1


def test_compaction_and_status_take_each_shard_as_archived_only_by_its_own_batches(sharded: Settings) -> None:
    old = floor_to(redis_ms(sharded), HOUR_MS) - 3 * HOUR_MS  # beyond the trim margin
    window = Window(old, old + sharded.window_ms)
    for n in (0, 1):
        xadd(sharded, device_of_shard(sharded, n), at_ms=old + 10)
    land_only(sharded, window, 0)  # only shard 0's copy of the window is archived
    streams = stream_names(sharded.stream_prefix, SHARDS)
    client = redis.Redis.from_url(sharded.redis_url.get_secret_value())
    horizon = old + HOUR_MS
    with psycopg.connect(sharded.database_url.get_secret_value()) as conn:
        # status names shard 1's entry as the oldest unarchived of its stream
        assert [oldest_unarchived_ms(client, conn, streams[n], horizon, n) for n in (0, 1)] == [
            None,
            old + 10,
        ]
        trimmed = [trim_stream(client, conn, streams[n], horizon, n) for n in (0, 1)]
    assert [t.entries if t else None for t in trimmed] == [1, 0]
    assert client.xlen(streams[0]) == 0 and client.xlen(streams[1]) == 1, "shard 1's entry is not archived"
    client.close()


def test_shards_runs_over_one_arrival_span_keep_each_others_rejections(sharded: Settings) -> None:
    """A shard's run replaces the rejections of its own messages only: the runs of the other shards
    decoded theirs in the same arrival span (before, each run deleted the others' rejections)."""
    devices = [device_of_shard(sharded, n, name) for name in ("a", "b") for n in range(SHARDS)]
    last = 0
    for payload in (b"21.5", b"\xff\xfe", b"22.5", b"\xfe\xff"):  # the shards' arrivals interleave
        last = max([last, *(xadd(sharded, device, payload=payload) for device in devices)])
    with DagsterInstance.ephemeral() as instance:
        requests = SensorDriver(sharded, instance).drain(last)
    assert len({r.tags[SHARD_TAG] for r in requests}) == SHARDS
    rejected = query(
        sharded,
        """SELECT b.shard, count(*) FROM rejected j JOIN raw_messages r USING (raw_id)
                JOIN batches b ON b.batch_id = r.batch_id
           WHERE r.stream = b.streams[1] GROUP BY b.shard ORDER BY b.shard""",
    )
    assert rejected == [(0, 4), (1, 4), (2, 4)], rejected
    assert query(sharded, "SELECT count(*) FROM measurements") == [(12,)]
