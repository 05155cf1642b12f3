"""The code location: assets, checks, job, sensor and resources, assembled from the one settings object."""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from dagster_project.assets import compaction, hourly_rollups, raw_messages, telemetry
from dagster_project.checks import (
    archive_complete,
    device_freshness_check,
    duplicates,
    plausibility,
    reconciliation,
    schema_pass_rate_check,
    timescale_jobs_healthy,
)
from dagster_project.freshness import build_telemetry_freshness
from dagster_project.jobs import compaction_job, micro_batch_job
from dagster_project.resources import resources_from_settings
from dagster_project.schedules import build_compaction_schedule
from dagster_project.sensors import build_micro_window_sensor
from iot_core.settings import Settings, get_settings


def build_definitions(settings: Settings) -> Definitions:
    freshness = build_telemetry_freshness(settings.freshness_deadline_cron)
    # In-process: a step per process costs ~14 s per run here. It must be set on Definitions so that UI
    # materializations and backfills (the implicit asset job) use it too.
    return Definitions(
        assets=[raw_messages, telemetry, hourly_rollups, compaction],
        asset_checks=[
            archive_complete,
            reconciliation,
            schema_pass_rate_check,
            plausibility,
            duplicates,
            device_freshness_check,
            timescale_jobs_healthy,
            *freshness.checks,
        ],
        jobs=[micro_batch_job, compaction_job],
        schedules=[build_compaction_schedule(settings.compaction_cron)],
        sensors=[build_micro_window_sensor(settings.sensor_interval_s), freshness.sensor],
        resources=resources_from_settings(settings),
        executor=in_process_executor,
    )


defs = build_definitions(get_settings())
