"""A micro-batch run shows a person two tags (its window and its kind); its range is in the run config,
where the checks read it, and the run worker's pid and start time are hidden tags the runs list leaves out."""

from __future__ import annotations

import uuid
from pathlib import Path

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
from dagster_graphql.schema.pipelines.pipeline import GrapheneRun

from dagster_project.defs.ingest.sensors import KIND_TAG, WINDOW_TAG, run_request
from dagster_project.defs.quality.hour_check import run_range_end_ms
from dagster_project.lib.windows import HOUR_MS, Window
from dagster_project.run_launcher import PID_TAG, STARTED_TAG

HOUR = 1_796_083_200_000  # 2026-12-01 00:00 UTC
MINUTE = Window(HOUR + 60_000, HOUR + 120_000)


def test_a_sensor_run_is_tagged_with_its_window_and_kind_only() -> None:
    assert run_request(MINUTE).tags == {WINDOW_TAG: MINUTE.short_label, KIND_TAG: "micro"}
    whole = Window(HOUR, HOUR + HOUR_MS)
    assert run_request(whole).tags == {WINDOW_TAG: whole.short_label, KIND_TAG: "hour"}
    assert run_request(MINUTE, "heal", attempt_ms=HOUR + 5).tags[KIND_TAG] == "heal"


def test_the_range_is_in_the_run_config_where_the_checks_read_its_end() -> None:
    config = run_request(MINUTE).run_config
    assert {op["config"]["start_ms"] for op in config["ops"].values()} == {MINUTE.start_ms}
    assert run_range_end_ms(config) == MINUTE.end_ms
    # a run without a range (launched from the UI, a backfill) checks the hours as far as they closed
    assert run_range_end_ms({}) is None
    assert run_range_end_ms({"ops": {"telemetry": {"config": {"start_ms": 0, "end_ms": 0}}}}) is None


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
