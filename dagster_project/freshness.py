"""Dagster's own freshness check on `telemetry`'s hour partitions, and the sensor that evaluates it.

The partitions end one hour ahead (`end_offset=1`), so the partition Dagster expects at a deadline tick is
the hour that tick falls in: at HH:15 the check passes once hour HH has been materialized, that is once a
micro-batch run of one of its first windows has finished. It is evaluated by its sensor, not by the
micro-batch runs: the sensor runs it when it has never run, when it passed and the next deadline has come,
and when it failed and telemetry has been materialized since.

Dagster 1.13 marks both factories "superseded" in favour of `FreshnessPolicy`; that policy judges the
newest materialization of any partition, so with the open hour materialized every minute it cannot tell
that an hour is overdue. The factories' supersession warning is silenced here.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from dagster import (
    AssetCheckKey,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    DefaultSensorStatus,
    SensorDefinition,
    SupersessionWarning,
    build_sensor_for_freshness_checks,
    build_time_partition_freshness_checks,
)

#: The check Dagster's factory defines on `telemetry` (the factory fixes its name).
TELEMETRY_FRESHNESS_CHECK = AssetCheckKey(AssetKey("telemetry"), "freshness_check")
SENSOR_NAME = "freshness_checks_sensor"
SENSOR_INTERVAL_S = 60


@dataclass(frozen=True)
class TelemetryFreshness:
    checks: Sequence[AssetChecksDefinition]
    sensor: SensorDefinition


def build_telemetry_freshness(deadline_cron: str) -> TelemetryFreshness:
    """The freshness check on `telemetry` with its deadline (`IOT_FRESHNESS_DEADLINE_CRON`, UTC) and the
    sensor that evaluates it, on from the start."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupersessionWarning)
        checks = build_time_partition_freshness_checks(
            assets=[TELEMETRY_FRESHNESS_CHECK.asset_key],
            deadline_cron=deadline_cron,
            timezone="UTC",
            # a late hour warns; `device_freshness` fails (ERROR) when nothing arrives at all
            severity=AssetCheckSeverity.WARN,
        )
        sensor = build_sensor_for_freshness_checks(
            freshness_checks=checks,
            minimum_interval_seconds=SENSOR_INTERVAL_S,
            name=SENSOR_NAME,
            default_status=DefaultSensorStatus.RUNNING,
        )
    return TelemetryFreshness(checks=checks, sensor=sensor)
