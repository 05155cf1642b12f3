"""The code location: assets, job, sensor and resources, built from the one settings object."""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from dagster_project.assets import raw_messages, telemetry
from dagster_project.jobs import micro_batch_job
from dagster_project.resources import resources_from_settings
from dagster_project.sensors import micro_window_sensor
from iot_core.settings import get_settings

# In-process: a step per process costs ~14 s per run here (shared/dagster-facts.md). It must be set on
# Definitions so that UI materializations and backfills (the implicit asset job) use it too.
defs = Definitions(
    assets=[raw_messages, telemetry],
    jobs=[micro_batch_job],
    sensors=[micro_window_sensor],
    resources=resources_from_settings(get_settings()),
    executor=in_process_executor,
)
