"""A micro-batch run shows a person two tags (its window and its kind); its range reaches the assets and
checks once, as the run's window resource, and the run worker's pid and start time are hidden tags the runs
list leaves out."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, Failure, PartitionKeyRange
from dagster_graphql.schema.pipelines.pipeline import GrapheneRun

from dagster_project.defs.ingest.sensors import KIND_TAG, WINDOW_TAG, run_request
from dagster_project.defs.run_window import RunWindowResource, configured_range
from dagster_project.lib.windows import HOUR_MS, Window, partition_window
from dagster_project.run_launcher import PID_TAG, STARTED_TAG

HOUR = 1_796_083_200_000  # 2026-12-01 00:00 UTC
MINUTE = Window(HOUR + 60_000, HOUR + 120_000)


def test_a_sensor_run_is_tagged_with_its_window_and_kind_only() -> None:
    assert run_request(MINUTE).tags == {WINDOW_TAG: MINUTE.short_label, KIND_TAG: "micro"}
    whole = Window(HOUR, HOUR + HOUR_MS)
    assert run_request(whole).tags == {WINDOW_TAG: whole.short_label, KIND_TAG: "hour"}
    assert run_request(MINUTE, "heal", attempt_ms=HOUR + 5).tags[KIND_TAG] == "heal"


def test_the_range_travels_once_as_the_runs_window_resource_and_reads_back() -> None:
    config = run_request(MINUTE).run_config
    assert config == {
        "resources": {"window": {"config": {"start_ms": MINUTE.start_ms, "end_ms": MINUTE.end_ms}}}
    }
    assert configured_range(config) == (MINUTE.start_ms, MINUTE.end_ms)
    # a run without a range (launched from the UI, a backfill) processes the hours as far as they closed
    assert configured_range({}) is None
    assert configured_range({"resources": {"window": {"config": {"start_ms": 0, "end_ms": 0}}}}) is None


def test_the_runs_window_resolves_inside_its_partitions_and_refuses_a_range_outside() -> None:
    keys = PartitionKeyRange(MINUTE.partition_key, MINUTE.partition_key)
    assert (
        RunWindowResource(start_ms=MINUTE.start_ms, end_ms=MINUTE.end_ms).resolve(keys, lambda: 0) == MINUTE
    )
    hour = partition_window(MINUTE.partition_key)
    # whole hours: as far as they have closed, never empty
    closed = hour.start_ms + 90_000
    assert RunWindowResource().resolve(keys, lambda: closed) == Window(hour.start_ms, closed)
    assert RunWindowResource().hours_so_far(keys, lambda: closed) == Window(hour.start_ms, closed)
    # a check in a micro-batch run judges its hour up to the end of the run's range
    micro = RunWindowResource(start_ms=MINUTE.start_ms, end_ms=MINUTE.end_ms)
    assert micro.hours_so_far(keys, lambda: closed) == Window(hour.start_ms, MINUTE.end_ms)
    outside = RunWindowResource(start_ms=hour.end_ms, end_ms=hour.end_ms + 60_000)
    with pytest.raises(Failure, match="not inside partition"):
        outside.resolve(keys, lambda: closed)


def test_the_runs_list_shows_the_window_kind_and_dagsters_own_tags_not_the_worker(tmp_path: Path) -> None:
    request = run_request(MINUTE)
    stored = {
        **request.tags,
        # what the daemon adds to a sensor's run, and what the run worker records
        "dagster/partition": MINUTE.partition_key,
        "dagster/sensor_name": "micro_window_sensor",
        "dagster/run_key": MINUTE.run_key,
        "dagster/tick": "42",
        PID_TAG: "4242",
        STARTED_TAG: "1795000000.25",
    }
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        run = instance.add_run(
            DagsterRun(
                job_name="micro_batch_job",
                run_id=str(uuid.uuid4()),
                run_config=request.run_config,
                tags=stored,
                status=DagsterRunStatus.SUCCESS,
            )
        )
        record = instance.get_run_record_by_id(run.run_id)
        assert record is not None and record.dagster_run.tags[PID_TAG] == "4242"
        shown = {tag.key for tag in GrapheneRun(record).resolve_tags(None)}  # ty: ignore[invalid-argument-type]
    assert shown == {
        WINDOW_TAG,
        KIND_TAG,
        "dagster/partition",
        "dagster/sensor_name",
        "dagster/run_key",
        "dagster/tick",
    }
