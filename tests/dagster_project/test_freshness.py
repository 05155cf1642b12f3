"""The freshness check on telemetry's hours: its verdict (pure), and its schedule's runs on a real instance,
whose results are the check's recorded evaluations (what the check page shows)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    DagsterInstance,
    Definitions,
    RunRequest,
    build_schedule_context,
    instance_for_test,
)

from dagster_project.definitions import build_definitions
from dagster_project.defs.quality.freshness_check import JOB_NAME, SCHEDULE_NAME, TELEMETRY_FRESHNESS_CHECK
from dagster_project.lib.freshness import judge
from iot_core.settings import Settings

HOUR_KEY = "%Y-%m-%d-%H:00"
START = datetime(2026, 12, 7, 10, tzinfo=UTC)  # the installation's hour


def test_an_hour_before_the_partitions_start_is_not_judged() -> None:
    before = judge(START - timedelta(minutes=45), START, materialized=False, ever_materialized=False)
    assert before.passed and before.hour_key is None and "2026-12-07-10:00" in before.description


def test_the_hour_the_deadline_falls_in_passes_once_materialized_and_warns_otherwise() -> None:
    deadline = START + timedelta(hours=1, minutes=15)
    fresh = judge(deadline, START, materialized=True, ever_materialized=True)
    assert fresh.passed and fresh.hour_key == "2026-12-07-11:00"
    overdue = judge(deadline, START, materialized=False, ever_materialized=True)
    assert (
        not overdue.passed and "overdue" in overdue.description and "2026-12-07-11:00" in overdue.description
    )
    never = judge(START + timedelta(minutes=15), START, materialized=False, ever_materialized=False)
    assert not never.passed and "never" in never.description and never.hour_key == "2026-12-07-10:00"


def scheduled_run(defs: Definitions, instance: DagsterInstance, tick: datetime) -> AssetCheckEvaluation:
    """The schedule's run for `tick`, executed as the daemon would launch it; its recorded evaluation."""
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
    [request] = (
        schedule.evaluate_tick(
            build_schedule_context(instance=instance, scheduled_execution_time=tick)
        ).run_requests
        or []
    )
    assert isinstance(request, RunRequest)
    result = defs.resolve_job_def(JOB_NAME).execute_in_process(
        run_config=request.run_config, instance=instance, tags=request.tags
    )
    assert result.success
    record = instance.get_latest_asset_check_evaluation_record(TELEMETRY_FRESHNESS_CHECK)
    assert record is not None and record.run_id == result.run_id  # the result the check page shows
    evaluation = record.evaluation
    assert evaluation is not None
    return evaluation


def materialize_hour(defs: Definitions, instance: DagsterInstance, key: str) -> None:
    """The whole hour through micro_batch_job, which leaves the freshness check to its schedule."""
    result = defs.resolve_job_def("micro_batch_job").execute_in_process(partition_key=key, instance=instance)
    assert result.success
    assert TELEMETRY_FRESHNESS_CHECK.name not in {c.check_name for c in result.get_asset_check_evaluations()}


@pytest.mark.services
def test_the_schedule_records_each_deadline_verdict_and_skips_hours_before_the_start(
    clean_db: str, settings: Settings, tmp_path: Path
) -> None:
    # partitions start at the hour before this one (the installation); deadline ticks at :15
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    update = {"freshness_deadline_cron": "15 * * * *", "partitions_start": start.strftime(HOUR_KEY)}
    defs = build_definitions(settings.model_copy(update=update))
    assert defs.resolve_schedule_def(SCHEDULE_NAME).cron_schedule == "15 * * * *"  # once per deadline

    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        before = scheduled_run(defs, instance, start - timedelta(minutes=45))  # the hour before the start
        assert before.passed and "No hour is due" in before.description

        tick = start + timedelta(minutes=15)
        due = start.strftime(HOUR_KEY)
        never = scheduled_run(defs, instance, tick)
        assert not never.passed and never.severity == AssetCheckSeverity.WARN
        assert "never" in never.description and due in never.description

        materialize_hour(defs, instance, (start + timedelta(hours=1)).strftime(HOUR_KEY))
        overdue = scheduled_run(defs, instance, tick)
        assert not overdue.passed and "overdue" in overdue.description and due in overdue.description

        materialize_hour(defs, instance, due)
        fresh = scheduled_run(defs, instance, tick)
        assert fresh.passed and due in fresh.description
        assert fresh.metadata["deadline"].value == tick.timestamp()
