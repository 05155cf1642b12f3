"""Schedules of the quality domain: the freshness check at each deadline tick."""

from datetime import UTC, datetime

from dagster import DefaultScheduleStatus, ScheduleDefinition, ScheduleEvaluationContext

# The one helper Dagster's own freshness checks use for "the latest tick of a cron before now".
from dagster_project.defs.quality.freshness_check import CHECK_OP, SCHEDULE_NAME
from dagster_project.defs.quality.jobs import freshness_check_job


def deadline_run_config(context: ScheduleEvaluationContext) -> dict:
    """The tick's time as the deadline the check judges (the run may start later than its tick)."""
    tick = context.scheduled_execution_time or datetime.now(UTC)
    return {"ops": {CHECK_OP: {"config": {"deadline_timestamp": tick.timestamp()}}}}


def build_freshness_schedule(deadline_cron: str) -> ScheduleDefinition:
    return ScheduleDefinition(
        name=SCHEDULE_NAME,
        job=freshness_check_job,
        cron_schedule=deadline_cron,
        execution_timezone="UTC",
        run_config_fn=deadline_run_config,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Runs telemetry's `freshness_check` at each deadline (IOT_FRESHNESS_DEADLINE_CRON).",
    )
