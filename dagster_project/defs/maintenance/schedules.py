"""Schedules: compaction on a cron from the settings (hourly by default), on from the start."""

from __future__ import annotations

from dagster import DefaultScheduleStatus, ScheduleDefinition

from dagster_project.defs.maintenance.jobs import compaction_job


def build_compaction_schedule(cron: str) -> ScheduleDefinition:
    return ScheduleDefinition(
        name="compaction_schedule",
        job=compaction_job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Runs compaction_job: nothing the pipeline keeps grows without bound "
        "(IOT_COMPACTION_CRON).",
    )
