"""Jobs of the maintenance domain: compaction with the checks that follow it."""

from __future__ import annotations

from dagster import AssetCheckKey, AssetKey, AssetSelection, define_asset_job

# Not partitioned: it looks at the database's background jobs, so it runs with compaction, not per hour.
TIMESCALE_JOBS_CHECK = AssetSelection.checks(AssetCheckKey(AssetKey("telemetry"), "timescale_jobs_healthy"))


# Runs after compaction has trimmed: how close Redis still is to its maxmemory.
REDIS_MEMORY_CHECK = AssetSelection.checks(AssetCheckKey(AssetKey("compaction"), "redis_memory"))


compaction_job = define_asset_job(
    "compaction_job",
    selection=AssetSelection.assets("compaction") | TIMESCALE_JOBS_CHECK | REDIS_MEMORY_CHECK,
    description="Trim archived stream entries, apply table retention, prune old micro-batch runs "
    "(each hour keeps one summary materialization).",
)
