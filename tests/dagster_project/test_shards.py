"""Parallel shards without services: what a shard's run carries, how the sensor's cursor holds each shard's
place, how far an hour counts as processed by every shard, and the run queue's limits per shard."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from dagster import DagsterInstance

from dagster_project.defs.ingest.sensors import ScopeTick, cursor_of, run_request, shard_states
from dagster_project.defs.ingest.shards import SHARD_TAG, Scope
from dagster_project.defs.run_window import RunWindowResource, configured_range, configured_shard
from dagster_project.lib.windows import HOUR_MS, Window, settled_until
from iot_core.settings import Settings
from iot_etl.dagster_instance import SHARD_TAG as INSTANCE_SHARD_TAG
from iot_etl.dagster_instance import instance_config

HOUR = 1_800 * HOUR_MS  # an hour boundary
WINDOW = Window(HOUR, HOUR + 60_000)


def test_a_single_streams_runs_carry_no_shard_as_before() -> None:
    request = run_request(WINDOW)
    config = {"start_ms": HOUR, "end_ms": HOUR + 60_000}
    assert request.run_config == {"resources": {"window": {"config": config}}}
    assert SHARD_TAG not in request.tags and request.run_key == WINDOW.run_key
    assert configured_shard(request.run_config) is None


def test_a_shards_run_carries_its_shard_in_its_window_tag_and_key() -> None:
    scope = Scope(2, ("iot:raw:2",))
    request = run_request(WINDOW, scope=scope)
    assert configured_shard(request.run_config) == 2
    assert configured_range(request.run_config) == (WINDOW.start_ms, WINDOW.end_ms)
    assert request.tags[SHARD_TAG] == "2" and request.tags["iot/kind"] == "micro"
    assert request.run_key != run_request(WINDOW, scope=Scope(1, ("iot:raw:1",))).run_key
    heal = run_request(WINDOW, "heal", 5, scope)
    assert heal.run_key.startswith("heal-") and heal.tags[SHARD_TAG] == "2"


def test_a_shards_run_reads_only_its_stream() -> None:
    streams = ["p:0", "p:1", "p:2"]
    assert RunWindowResource(start_ms=1, end_ms=2, shard=1).streams_of(streams) == ["p:1"]
    assert RunWindowResource(start_ms=1, end_ms=2).streams_of(streams) == streams


def test_each_shard_keeps_its_own_place_in_the_cursor() -> None:
    scopes = [Scope(n, (f"p:{n}",)) for n in range(3)]
    # a cursor from before the shards had runs of their own: every shard starts where it stood
    assert shard_states({"next_ms": 600_000, "heal": {}}, scopes) == [{"next_ms": 600_000}] * 3
    ticks = [ScopeTick([], {"next_ms": ms, "heal": {}}, 0) for ms in (120_000, 60_000, 180_000)]
    cursor = json.loads(cursor_of(scopes, ticks))
    assert cursor["next_ms"] == 60_000, "the earliest shard's, where one stream would resume"
    assert shard_states(cursor, scopes) == [t.state for t in ticks]
    # a new shard (none in the cursor) starts where the earliest did
    more = [*scopes, Scope(3, ("p:3",))]
    assert shard_states(cursor, more)[3] == {"next_ms": 60_000}
    single = [Scope(None, ("p",))]
    assert cursor_of(single, ticks[:1]) == json.dumps(ticks[0].state)
    assert shard_states({"next_ms": 5}, single) == [{"next_ms": 5}]


def test_an_hour_is_settled_as_far_as_every_shard_is_processed() -> None:
    start, end = HOUR, HOUR + 5 * 60_000
    entries = {0: [HOUR + 30_000], 1: [HOUR + 150_000, HOUR + 270_000], 2: []}

    def has_entries(shard: int, gap: Window) -> bool:
        return any(gap.start_ms <= ms < gap.end_ms for ms in entries[shard])

    processed = {0: [(start, end)], 1: [(start, HOUR + 120_000)], 2: []}
    # shard 1's third window (entries) is not processed; shard 2 has no entries and needs no batch
    assert settled_until(processed, start, end, has_entries) == HOUR + 120_000
    processed[1].append((HOUR + 120_000, HOUR + 240_000))
    assert settled_until(processed, start, end, has_entries) == HOUR + 240_000
    processed[1].append((HOUR + 240_000, end))
    assert settled_until(processed, start, end, has_entries) == end
    processed[0] = []
    assert settled_until(processed, start, end, has_entries) == start


def test_the_queue_limits_runs_overall_and_per_shard_from_the_settings(tmp_path: Path) -> None:
    assert INSTANCE_SHARD_TAG == SHARD_TAG
    single = instance_config(Settings(dagster_home=tmp_path))["run_coordinator"]["config"]
    assert single == {"max_concurrent_runs": 2, "dequeue_interval_seconds": 1}, "one stream: as before"
    sharded = Settings(dagster_home=tmp_path, stream_shards=3, max_concurrent_runs=4, runs_per_shard=2)
    config = instance_config(sharded)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with DagsterInstance.from_config(str(tmp_path)) as instance:  # Dagster's own schema accepts it
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        assert coordinator.get_run_queue_config().max_concurrent_runs == 4  # ty: ignore[unresolved-attribute]
        [limit] = coordinator.get_run_queue_config().tag_concurrency_limits  # ty: ignore[unresolved-attribute]
    assert limit == {"key": SHARD_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 2}
