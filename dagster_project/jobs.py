"""Jobs: the micro-batch job the sensor launches (both assets over one arrival range)."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from dagster_project.partitions import hourly_arrival_partitions

micro_batch_job = define_asset_job(
    "micro_batch_job",
    selection=AssetSelection.assets("raw_messages", "telemetry", "hourly_rollups"),
    partitions_def=hourly_arrival_partitions,
    description="Land one arrival range of the raw streams, decode it into telemetry and bring the "
    "hourly rollups of the readings it touched up to date.",
)
