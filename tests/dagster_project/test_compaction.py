"""Compaction on real Redis, PostgreSQL and a real Dagster instance: stream trim, retention, run pruning."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import redis
from dagster import AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus, materialize
from pydantic import SecretStr

from dagster_project.dagster_internals import bulk_delete_supported
from dagster_project.defs.ingest.sensors import run_request
from dagster_project.defs.maintenance.assets import compaction
from dagster_project.defs.maintenance.runs import prune_before, prune_runs
from dagster_project.defs.quality.freshness_check import JOB_NAME as FRESHNESS_JOB_NAME
from dagster_project.defs.quality.freshness_check import SCHEDULE_NAME as FRESHNESS_SCHEDULE_NAME
from dagster_project.defs.resources import resources_from_settings
from dagster_project.lib.compaction import keep_from_ms
from dagster_project.lib.retention import (
    RetentionRule,
    continuous_aggregates,
    hypertables,
    policy_job,
)
from dagster_project.lib.windows import HOUR_MS, Window, floor_to
from iot_core.settings import Settings
from iot_etl.dagster_instance import write_instance_config
from iot_etl.migrate import ensure_database
from tests.support.database import database_url, drop_database
from tests.support.pipeline import SensorDriver
from tests.support.rollups import device_and_metric

pytestmark = pytest.mark.services

WINDOW_MS = 10_000
COMPRESSION = {"measurements": "7 days", "raw_messages": "2 days"}


@pytest.fixture(autouse=True)
def no_compaction_history(migrated_db: str) -> None:
    """The compaction log and the summarised hours are per test, like the fact tables."""
    with psycopg.connect(migrated_db) as conn:
        conn.execute("TRUNCATE compactions, summarised_hours")


def test_keep_from_is_the_first_uncovered_range_with_entries() -> None:
    ranges = [(0, 10), (10, 20), (30, 40)]
    assert keep_from_ms(ranges, 0, 50, lambda gap: True) == 20
    assert keep_from_ms(ranges, 0, 50, lambda gap: gap.start_ms >= 40) == 40  # empty gap 20..30 is no hold
    assert keep_from_ms(ranges, 0, 40, lambda gap: False) == 40
    assert keep_from_ms([], 5, 50, lambda gap: True) == 5


def old_hour_ms(client: redis.Redis, hours_ago: int) -> int:
    seconds, _ = client.time()
    return floor_to(int(seconds) * 1000, HOUR_MS) - hours_ago * HOUR_MS


def add_entries(client: redis.Redis, stream: str, start_ms: int, count: int) -> None:
    """Entries with explicit (past) IDs, as the listener would have written them then."""
    for n in range(count):
        client.xadd(
            stream,
            {
                "topic": "devices/a1b2c3d4/temperature",
                "payload": f"{20 + n}",
                "qos": "1",
                "retain": "0",
                "rx_us": str((start_ms + n) * 1000),
            },
            id=f"{start_ms + n * 100}-0",
        )


def test_compaction_never_trims_an_unarchived_window(clean_db: str, settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    stream = settings.stream_prefix
    hour = old_hour_ms(client, 3)
    a, b, c = (Window(hour + n * WINDOW_MS, hour + (n + 1) * WINDOW_MS) for n in range(3))
    for window in (a, b, c):
        add_entries(client, stream, window.start_ms, 5)
    seconds, _ = client.time()
    add_entries(client, stream, int(seconds) * 1000 - 60_000, 1)  # recent: inside the safety margin

    with DagsterInstance.ephemeral() as instance:
        driver = SensorDriver(settings, instance)
        driver.execute(run_request(a))
        driver.execute(run_request(c))  # b's run failed: b was never archived
        result = materialize([compaction], instance=instance, resources=resources_from_settings(settings))
        assert result.success
        metadata = result.asset_materializations_for_node("compaction")[0].metadata
        assert metadata["stream_entries_trimmed"].value == 5
        left = [int(e[0].split(b"-")[0]) for e in client.xrange(stream)]
        assert min(left) == b.start_ms
        assert len(left) == 11  # b, c and the recent entry

        driver.execute(run_request(b))  # b archived at last: everything past the margin can go
        assert materialize(
            [compaction], instance=instance, resources=resources_from_settings(settings)
        ).success
        assert client.xlen(stream) == 1
    with psycopg.connect(clean_db) as conn:
        (trimmed,) = conn.execute("SELECT sum(stream_entries_trimmed) FROM compactions").fetchone()
        assert trimmed >= 15


RULES = [
    RetentionRule("raw_messages", "arrived_at", 90),
    RetentionRule("measurements", "ts", 365),
    RetentionRule("events", "ts_server", 365),
    RetentionRule("rejected", "arrived_at", 30),
    RetentionRule("batches", "range_end", 30),
]


def seed_ages(conn: psycopg.Connection, now: datetime) -> None:
    """For every table: rows far past its retention, just past it, just inside it, and recent."""
    device, metric = device_and_metric(conn, "retention-1", "retention")
    for rule in RULES:
        cutoff = now - timedelta(days=rule.days)
        ages = [cutoff - timedelta(days=200, minutes=n) for n in range(250)]  # several delete batches
        ages += [cutoff - timedelta(minutes=1), cutoff + timedelta(minutes=1), now - timedelta(hours=1)]
        for n, ts in enumerate(ages):
            if rule.table == "raw_messages":
                conn.execute(
                    "INSERT INTO raw_messages (arrived_at, stream, entry_ms, entry_seq, topic, payload, qos, "
                    "retain, rx_us, batch_id) VALUES (%s, 's', %s, 0, 't', '', 1, false, 0, 0)",
                    (ts, n),
                )
            elif rule.table == "measurements":
                conn.execute(
                    "INSERT INTO measurements (ts, device_id, metric_id, value_num, arrived_at, raw_id, "
                    "batch_id) "
                    "VALUES (%s, %s, %s, 1, %s, 0, 0)",
                    (ts, device, metric, ts),
                )
            elif rule.table == "events":
                conn.execute(
                    "INSERT INTO events (device_id, event_id, schema, event_type, ts_server, raw_id, "
                    "batch_id) "
                    "VALUES (%s, %s, 1, 'x', %s, 0, 0)",
                    (device, f"e{n}", ts),
                )
            elif rule.table == "rejected":
                conn.execute(
                    "INSERT INTO rejected (raw_id, stage, reason, topic, arrived_at, batch_id) "
                    "VALUES (%s, 'topic', 'x', 't', %s, 0)",
                    (n, ts),
                )
            else:
                conn.execute(
                    "INSERT INTO batches (run_id, partition_key, range_start, range_end, start_id, end_id, "
                    "streams, decoder_version) VALUES (%s, 'k', %s, %s, '', '', '{}', 'v')",
                    (f"r{n}", ts - timedelta(seconds=10), ts),
                )


def ages_left(conn: psycopg.Connection, rule: RetentionRule, now: datetime) -> tuple[int, int]:
    """(rows older than the cutoff, rows newer) still in the table."""
    cutoff = now - timedelta(days=rule.days)
    row = conn.execute(
        f"SELECT count(*) FILTER (WHERE {rule.column} < %s), count(*) FILTER (WHERE {rule.column} >= %s) "
        f"FROM {rule.table}",
        (cutoff, cutoff),
    ).fetchone()
    return int(row[0]), int(row[1])


def test_retention_removes_exactly_the_rows_past_their_age(clean_db: str) -> None:
    from dagster_project.lib.compaction import apply_retention

    now = datetime.now(UTC).replace(microsecond=0)
    with psycopg.connect(clean_db, autocommit=True) as conn:
        conn.execute("DELETE FROM measurements; DELETE FROM events")
        seed_ages(conn, now)
        hyper = hypertables(conn)
        spent = apply_retention(conn, RULES, now, 100, time.monotonic() - 1, "1 day", COMPRESSION)
        plain = [r for r in spent.removed if r.table not in hyper]
        assert plain and all(not r.done and r.rows == 0 for r in plain)  # no budget: nothing deleted

        outcome = apply_retention(conn, RULES, now, 100, time.monotonic() + 300, "1 day", COMPRESSION)
        for rule in RULES:
            old, new = ages_left(conn, rule, now)
            if rule.table in hyper:
                # whole chunks go: the 200-days-older rows, never a row inside the retention
                assert new == 2, rule.table
                assert old <= 1, rule.table
                # (how many chunks this call dropped is not asserted: the retention policy's own
                # background job may have dropped them first)
            else:
                assert (old, new) == (0, 2), rule.table
                removed = next(r for r in outcome.removed if r.table == rule.table)
                assert removed.rows == 251 and removed.done


@pytest.fixture(params=["in-memory", "postgres"])
def run_instance(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> Iterator[DagsterInstance]:
    """A Dagster instance on in-memory SQL storage, or on PostgreSQL storage as `iot-etl up` configures
    it with IOT_DAGSTER_PG_URL: both delete runs in batches."""
    if request.param == "in-memory":
        with DagsterInstance.ephemeral() as instance:
            yield instance
        return
    name = f"{settings.database_name()}_dagster"
    ensure_database(database_url(name))
    home = write_instance_config(
        settings.model_copy(
            update={"dagster_home": tmp_path / "home", "dagster_pg_url": SecretStr(database_url(name))}
        )
    )
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            yield instance
    finally:
        drop_database(name)


def hour_ago_windows(settings: Settings, count: int, entries: int) -> list[Window]:
    """The first `count` windows of the hour two hours ago, `entries` stream entries each."""
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    hour = old_hour_ms(client, 2)
    windows = [Window(hour + n * WINDOW_MS, hour + (n + 1) * WINDOW_MS) for n in range(count)]
    for window in windows:
        add_entries(client, settings.stream_prefix, window.start_ms, entries)
    return windows


def test_pruning_old_micro_runs_keeps_each_hour_materialized(
    clean_db: str, settings: Settings, run_instance: DagsterInstance
) -> None:
    windows = hour_ago_windows(settings, 3, 4)
    key = windows[0].partition_key

    instance = run_instance
    driver = SensorDriver(settings, instance)
    for window in windows:
        driver.execute(run_request(window))
    runs = instance.get_runs()
    assert len(runs) == 3 and all(r.tags["iot/kind"] == "micro" for r in runs)
    assert bulk_delete_supported(instance)  # SQLite's database per run: test_ui_still_shows_pruned_hours...

    with psycopg.connect(clean_db, autocommit=True) as conn:
        pruned = prune_runs(
            instance, conn, datetime.now(UTC) + timedelta(seconds=1), time.monotonic() + 300, batch=2
        )
        assert (pruned.runs_deleted, pruned.hours_summarised, pruned.done) == (3, [key], True)
        assert all(instance.all_logs(run.run_id) == [] for run in runs)
        again = prune_runs(instance, conn, datetime.now(UTC) + timedelta(seconds=1), time.monotonic() + 300)
        assert (again.runs_deleted, again.hours_summarised) == (0, [])

    assert instance.get_runs() == []
    for asset in ("raw_messages", "telemetry"):
        assert key in instance.get_materialized_partitions(AssetKey(asset))
    latest = instance.get_latest_materialization_event(AssetKey("telemetry"))
    assert latest is not None
    materialization = latest.asset_materialization
    assert materialization.partition == key
    assert materialization.metadata["raw_messages"].value == 12
    assert materialization.metadata["measurements"].value == 12
    assert materialization.metadata["batches"].value == 3


SUCCEEDED = DagsterRunStatus.SUCCESS


def test_pruning_takes_heal_runs_and_recurring_maintenance_runs_but_keeps_the_newest_of_each(
    clean_db: str, settings: Settings, run_instance: DagsterInstance
) -> None:
    windows = hour_ago_windows(settings, 2, 3)
    key = windows[0].partition_key
    instance = run_instance
    driver = SensorDriver(settings, instance)
    driver.execute(run_request(windows[0]))
    driver.execute(run_request(windows[1], "heal", int(time.time() * 1000)))
    maintenance = {
        "compaction_job": {},
        FRESHNESS_JOB_NAME: {"dagster/schedule_name": FRESHNESS_SCHEDULE_NAME},
    }
    newest = {}
    for job_name, tags in maintenance.items():
        for _ in range(3):
            run = DagsterRun(
                job_name=job_name, run_id=str(uuid.uuid4()), tags=tags, status=DagsterRunStatus.SUCCESS
            )
            instance.add_run(run)
            newest[job_name] = run.run_id
            time.sleep(0.01)  # creation order is the order of deletion
    # a manual run of another job is no maintenance run: left alone
    other = DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.uuid4()), status=SUCCEEDED)
    instance.add_run(other)

    with psycopg.connect(clean_db, autocommit=True) as conn:
        pruned = prune_runs(
            instance, conn, datetime.now(UTC) + timedelta(seconds=1), time.monotonic() + 300, batch=2
        )
    assert (pruned.runs_deleted, pruned.hours_summarised, pruned.done) == (2 + 2 + 2, [key], True)
    assert {run.run_id for run in instance.get_runs()} == {*newest.values(), other.run_id}
    for asset in ("raw_messages", "telemetry"):
        assert key in instance.get_materialized_partitions(AssetKey(asset))
    latest = instance.get_latest_materialization_event(AssetKey("telemetry"))
    assert latest is not None and latest.asset_materialization.metadata["batches"].value == 2


def test_run_retention_takes_fractions_of_a_day_and_never_reaches_into_the_open_hour() -> None:
    assert Settings(dagster_run_retention_days=0.25).dagster_run_retention_days == 0.25
    with pytest.raises(ValueError):
        Settings(dagster_run_retention_days=0)
    now = datetime(2026, 11, 29, 12, 40, tzinfo=UTC)
    assert prune_before(now, 7) == now - timedelta(days=7)
    assert prune_before(now, 1 / 24) == datetime(2026, 11, 29, 11, 40, tzinfo=UTC)
    assert prune_before(now, 10 / 1440) == datetime(2026, 11, 29, 12, 0, tzinfo=UTC)  # not 12:30
    assert prune_before(now.replace(minute=5), 0.5 / 1440) == datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_sub_day_retention_prunes_once_the_hour_closed_and_resummarises_a_late_run(
    clean_db: str, settings: Settings
) -> None:
    windows = hour_ago_windows(settings, 3, 4)
    key = windows[0].partition_key
    retention_days = 10 / 1440
    now = datetime.now(UTC)
    # as compaction would see it 20 minutes after the hour that is open now has closed
    later = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1, minutes=20)

    with DagsterInstance.ephemeral() as instance:
        driver = SensorDriver(settings, instance)
        for window in windows[:2]:
            driver.execute(run_request(window))
        with psycopg.connect(clean_db, autocommit=True) as conn:
            # created in the open hour: kept, whatever the retention (the test cannot age a run)
            kept = prune_runs(instance, conn, prune_before(now, retention_days), time.monotonic() + 300)
            assert (kept.runs_deleted, kept.hours_summarised) == (0, [])
            first = prune_runs(instance, conn, prune_before(later, retention_days), time.monotonic() + 300)
            assert (first.runs_deleted, first.hours_summarised) == (2, [key])

            driver.execute(run_request(windows[2]))  # the hour re-run after its summary
            again = prune_runs(instance, conn, prune_before(later, retention_days), time.monotonic() + 300)
            assert (again.runs_deleted, again.hours_summarised) == (1, [key])

        assert instance.get_runs() == []
        latest = instance.get_latest_materialization_event(AssetKey("telemetry"))
        assert latest is not None and latest.asset_materialization.partition == key
        assert latest.asset_materialization.metadata["raw_messages"].value == 12


def test_status_names_the_oldest_unarchived_entry_and_the_last_compaction(
    clean_db: str, settings: Settings
) -> None:
    from iot_etl.status import database_status, redis_status

    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    hour = old_hour_ms(client, 2)
    archived, unarchived = Window(hour, hour + WINDOW_MS), Window(hour + WINDOW_MS, hour + 2 * WINDOW_MS)
    add_entries(client, settings.stream_prefix, archived.start_ms, 2)
    add_entries(client, settings.stream_prefix, unarchived.start_ms, 2)
    with DagsterInstance.ephemeral() as instance:
        SensorDriver(settings, instance).execute(run_request(archived))

    lines = {(line.part, line.item): line.value for line in redis_status(settings)}
    assert lines[("redis", settings.stream_prefix)].startswith("4 entries, ")
    oldest = lines[("redis", f"{settings.stream_prefix} oldest unarchived")]
    assert oldest == datetime.fromtimestamp(unarchived.start_ms / 1000, UTC).isoformat()

    before = {(line.part, line.item): line.value for line in database_status(settings)}
    assert before[("compaction", "last")] == "never"
    assert before[("database", "raw_messages size")].endswith(" MB")
    hour_start = datetime.fromtimestamp(hour / 1000, UTC).replace(minute=0)
    assert before[("database", "hourly_rollups")] == (
        f"1 device-metric hours, newest {hour_start:%Y-%m-%d %H:00} (2 readings)"
    )
    with DagsterInstance.ephemeral() as instance:
        materialize([compaction], instance=instance, resources=resources_from_settings(settings))
    after = {(line.part, line.item): line.value for line in database_status(settings)}
    assert "2 stream entries" in after[("compaction", "last")]


PARTITIONS_QUERY = """{
  assetNodeOrError(assetKey: {path: ["telemetry"]}) {
    ... on AssetNode { assetPartitionStatuses {
      ... on TimePartitionStatuses { ranges { startKey endKey status } } } }
  }
  assetCheckExecutions(assetKey: {path: ["telemetry"]}, checkName: "reconciliation", limit: 10) {
    status evaluation { partition success }
  }
}"""


def test_ui_still_shows_pruned_hours_materialized_and_checked(clean_db: str, settings: Settings) -> None:
    """Asked the way the UI asks (GraphQL, the code location in its own process) after pruning."""
    from dagster import instance_for_test
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    windows = hour_ago_windows(settings, 2, 3)
    key = windows[0].partition_key

    with instance_for_test() as instance:
        driver = SensorDriver(settings, instance)
        for window in windows:
            driver.execute(run_request(window))
        shards = [Path(instance.event_log_storage.path_for_shard(run.run_id)) for run in instance.get_runs()]
        assert len(shards) == 2 and all(shard.exists() for shard in shards)  # SQLite: a database per run
        with psycopg.connect(clean_db, autocommit=True) as conn:
            pruned = prune_runs(
                instance, conn, datetime.now(UTC) + timedelta(seconds=1), time.monotonic() + 300
            )
        assert pruned.runs_deleted == 2 and instance.get_runs() == []
        assert not any(shard.exists() for shard in shards)

        definitions = str(Path(__file__).resolve().parents[2] / "dagster_project" / "definitions.py")
        with define_out_of_process_context(definitions, "defs", instance) as context:
            result = execute_dagster_graphql(context, PARTITIONS_QUERY)
        assert not result.errors, result.errors
        ranges = result.data["assetNodeOrError"]["assetPartitionStatuses"]["ranges"]
        assert any(r["status"] == "MATERIALIZED" and r["startKey"] <= key <= r["endKey"] for r in ranges), (
            ranges
        )
        executions = result.data["assetCheckExecutions"]
        assert executions and all(e["evaluation"]["partition"] == key for e in executions)
        assert all(e["status"] == "SUCCEEDED" for e in executions)


def test_compaction_removes_rollups_past_their_retention(clean_db: str, settings: Settings) -> None:
    """`hourly_rollups` outlives `measurements` (730 against 365 days by default) and goes by its own
    setting: rows on PostgreSQL, chunks of the continuous aggregate on TimescaleDB."""
    from dagster_project.lib.rollups import refresh_rollups

    assert settings.retention_rollups_days > settings.retention_measurements_days
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    ages = [now - timedelta(days=settings.retention_rollups_days + d) for d in (70, 2)]
    kept = [now - timedelta(days=settings.retention_rollups_days - 30), now - timedelta(days=1)]
    arrived = now - timedelta(minutes=30)
    with psycopg.connect(clean_db, autocommit=True) as conn:
        device, metric = device_and_metric(conn, "rollup-age", "rollup-age")
        for n, ts in enumerate(ages + kept):  # read long ago, arriving now (as a device's backlog would)
            (raw_id,) = conn.execute(
                "INSERT INTO raw_messages (arrived_at, stream, entry_ms, entry_seq, topic, payload, qos, "
                "retain, rx_us, batch_id) VALUES (%s, 's', %s, 0, 't', '', 1, false, 0, 0) RETURNING raw_id",
                (arrived, n),
            ).fetchone()
            conn.execute(
                "INSERT INTO measurements (ts, device_id, metric_id, value_num, arrived_at, raw_id, "
                "batch_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, 0)",
                (ts, device, metric, n, arrived, raw_id),
            )
        assert refresh_rollups(conn, arrived, arrived + timedelta(seconds=1)) == 4
        aggregate = "hourly_rollups" in continuous_aggregates(conn)

    with DagsterInstance.ephemeral() as instance:
        result = materialize([compaction], instance=instance, resources=resources_from_settings(settings))
    assert result.success
    metadata = result.asset_materializations_for_node("compaction")[0].metadata
    assert "- hourly_rollups: " in metadata["rows_deleted_by_table"].value
    with psycopg.connect(clean_db) as conn:
        hours = [h for (h,) in conn.execute("SELECT hour FROM hourly_rollups ORDER BY hour")]
        (details,) = conn.execute("SELECT details FROM compactions").fetchone()
    removed = details["tables"]["hourly_rollups"]
    if aggregate:
        # whole chunks go: the far one, never a kept hour; the hour just past the retention shares a chunk
        # with later hours. How many chunks this run dropped is not asserted: the retention policy's own
        # background job may have dropped them first.
        assert hours[-2:] == kept and ages[0] not in hours
        # its retention policy is the setting's (made by this compaction or an earlier one)
        with psycopg.connect(clean_db) as conn:
            job = policy_job(conn, "hourly_rollups", "policy_retention")
        assert job is not None and job[1]["drop_after"] == f"{settings.retention_rollups_days} days"
    else:
        assert hours == kept
        assert removed == {"rows": 2, "chunks": 0, "done": True}
