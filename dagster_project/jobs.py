"""Jobs: the micro-batch job the sensor launches (both assets over one arrival range), and compaction's."""

from __future__ import annotations

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetSelection,
    PartitionsDefinition,
    define_asset_job,
)

from dagster_project.dagster_internals import UnresolvedAssetJobDefinition
from dagster_project.freshness import TELEMETRY_FRESHNESS_CHECK

MICRO_BATCH_JOB = "micro_batch_job"
# Not partitioned: it looks at the database's background jobs, so it runs with compaction, not per hour.
TIMESCALE_JOBS_CHECK = AssetSelection.checks(AssetCheckKey(AssetKey("telemetry"), "timescale_jobs_healthy"))
# Runs after compaction has trimmed: how close Redis still is to its maxmemory.
REDIS_MEMORY_CHECK = AssetSelection.checks(AssetCheckKey(AssetKey("compaction"), "redis_memory"))
# Not partitioned either: its schedule evaluates it at each deadline (see `freshness`).
FRESHNESS_CHECK = AssetSelection.checks(TELEMETRY_FRESHNESS_CHECK)


def build_micro_batch_job(partitions: PartitionsDefinition) -> UnresolvedAssetJobDefinition:
    return define_asset_job(
        MICRO_BATCH_JOB,
        selection=AssetSelection.assets("raw_messages", "telemetry", "hourly_rollups")
        - TIMESCALE_JOBS_CHECK
        - FRESHNESS_CHECK,
        partitions_def=partitions,
        description="Land one arrival range of the raw streams, decode it into telemetry and bring the "
        "hourly rollups of the readings it touched up to date.",
    )


compaction_job = define_asset_job(
    "compaction_job",
    selection=AssetSelection.assets("compaction") | TIMESCALE_JOBS_CHECK | REDIS_MEMORY_CHECK,
    description="Trim archived stream entries, apply table retention, prune old micro-batch runs "
    "(each hour keeps one summary materialization).",
)
