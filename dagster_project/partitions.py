"""Hourly arrival-time partitions: micro-batch runs fill the open hour."""

from __future__ import annotations

from dagster import HourlyPartitionsDefinition

PARTITIONS_START = "2026-01-01-00:00"

# end_offset=1 makes the current, still open hour a valid partition key.
hourly_arrival_partitions = HourlyPartitionsDefinition(
    start_date=PARTITIONS_START, end_offset=1, timezone="UTC"
)
