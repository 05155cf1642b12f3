"""Jobs of the ingest domain: the micro-batch job the sensor launches over one arrival range."""

from __future__ import annotations

from collections.abc import Sequence

from dagster import AssetChecksDefinition, AssetSelection, PartitionsDefinition, define_asset_job

from dagster_project.dagster_internals import UnresolvedAssetJobDefinition

MICRO_BATCH_JOB = "micro_batch_job"
#: The assets a micro-batch run materializes, in order.
MICRO_BATCH_ASSETS = ("raw_messages", "telemetry", "hourly_rollups")


def build_micro_batch_job(
    partitions: PartitionsDefinition, hour_checks: Sequence[AssetChecksDefinition]
) -> UnresolvedAssetJobDefinition:
    """The job over `MICRO_BATCH_ASSETS` with the checks per hour partition (`hour_checks`); the checks
    that are not partitioned run with their own jobs."""
    return define_asset_job(
        MICRO_BATCH_JOB,
        selection=AssetSelection.assets(*MICRO_BATCH_ASSETS).without_checks()
        | AssetSelection.checks(*hour_checks),
        partitions_def=partitions,
        description="Land one arrival range of the raw streams, decode it into telemetry and bring the "
        "hourly rollups of the readings it touched up to date.",
    )
