"""The code location: assets, checks, job, sensor and resources, assembled from the one settings object."""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from dagster_project.defs.ingest.assets import build_ingest_assets
from dagster_project.defs.ingest.jobs import build_micro_batch_job
from dagster_project.defs.ingest.sensors import build_micro_window_sensor
from dagster_project.defs.maintenance.assets import compaction
from dagster_project.defs.maintenance.checks import redis_memory, timescale_jobs_healthy
from dagster_project.defs.maintenance.jobs import compaction_job
from dagster_project.defs.maintenance.schedules import build_compaction_schedule
from dagster_project.defs.partitions import build_hourly_partitions, partitions_start
from dagster_project.defs.quality.checks import build_hour_checks
from dagster_project.defs.quality.freshness_check import build_freshness_check
from dagster_project.defs.quality.jobs import freshness_check_job
from dagster_project.defs.quality.schedules import build_freshness_schedule
from dagster_project.defs.resources import resources_from_settings
from iot_core.settings import Settings, get_settings


def build_definitions(settings: Settings) -> Definitions:
    """Everything of the code location from `settings`; the partitions start where `partitions_start` says
    (the installation's recorded start, read from the database, unless IOT_PARTITIONS_START is set)."""
    start = partitions_start(settings)
    partitions = build_hourly_partitions(start)
    hour_checks = build_hour_checks(partitions)
    freshness = build_freshness_check(settings.freshness_deadline_cron, start)
    # In-process: a step per process costs ~14 s per run here. It must be set on Definitions so that UI
    # materializations and backfills (the implicit asset job) use it too.
    return Definitions(
        assets=[*build_ingest_assets(partitions), compaction],
        asset_checks=[*hour_checks, timescale_jobs_healthy, redis_memory, freshness],
        jobs=[build_micro_batch_job(partitions, hour_checks), compaction_job, freshness_check_job],
        schedules=[
            build_compaction_schedule(settings.compaction_cron),
            build_freshness_schedule(settings.freshness_deadline_cron),
        ],
        sensors=[build_micro_window_sensor(settings.sensor_interval_s)],
        # the run's window is configured per run (the sensor's runs), else whole hours
        resources=resources_from_settings(settings),
        executor=in_process_executor,
    )


# Dagster's code location loads this module-level object: the one place that reads the settings at import.
defs = build_definitions(get_settings())
