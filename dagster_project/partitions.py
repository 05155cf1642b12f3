"""Hourly arrival-time partitions: micro-batch runs fill the open hour.

They start at `IOT_PARTITIONS_START`, so a new installation does not show months of "missing" hours
before its first message. The definition is built once from the process's settings (the same object
`definitions.build_definitions` gets), so every module that declares a partitioned asset, check or job
shares it.
"""

from __future__ import annotations

from dagster import HourlyPartitionsDefinition

from iot_core.settings import get_settings


def build_hourly_partitions(start: str) -> HourlyPartitionsDefinition:
    """Hours from `start` (`YYYY-MM-DD-HH:00`, UTC); end_offset=1 makes the open hour a valid key."""
    return HourlyPartitionsDefinition(start_date=start, end_offset=1, timezone="UTC")


PARTITIONS_START = get_settings().partitions_start
hourly_arrival_partitions = build_hourly_partitions(PARTITIONS_START)
