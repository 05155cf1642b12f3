"""Checks that run with compaction: TimescaleDB's background jobs and Redis's memory."""

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from dagster_project.defs.metadata import SAMPLE
from dagster_project.defs.resources import DatabaseResource, RedisStreamsResource
from dagster_project.lib.timescale_jobs import timescale_failed_jobs
from iot_core.redis_memory import PRESSURE_SHARE, redis_memory_or_none


@asset_check(
    asset="telemetry",
    description="No TimescaleDB policy job (compression, retention) has failed its last run: a failing "
    "job means chunks are neither compressed nor dropped. Passes on plain PostgreSQL. Runs with every "
    "compaction_job run and from the UI.",
)
def timescale_jobs_healthy(owner_database: DatabaseResource) -> AssetCheckResult:
    # as the owner: TimescaleDB shows a failed run's message only to the database's and the job's owner
    with owner_database.connect() as conn:
        failed = timescale_failed_jobs(conn)
    return AssetCheckResult(
        passed=not failed,
        severity=AssetCheckSeverity.ERROR,
        description=None
        if not failed
        else f"{len(failed)} TimescaleDB job(s) failed, the first: {failed[0].proc_name} on "
        f"{failed[0].table or '-'}: {failed[0].describe()}",
        metadata={
            "failed_jobs": len(failed),
            "errors": MetadataValue.md(
                "\n".join(
                    f"- job {j.job_id} {j.proc_name} {j.table}: {j.describe()}" for j in failed[:SAMPLE]
                )
                or "none"
            ),
        },
    )


@asset_check(
    asset="compaction",
    description=f"Redis holds less than {PRESSURE_SHARE:.0%} of its maxmemory once compaction has trimmed "
    "(one INFO memory): above it, what is left is not archived yet or within a window still closing; a "
    "full Redis (noeviction) makes the listener stop acknowledging. Warns only; passes without a "
    "maxmemory. Runs with every compaction_job run and from the UI.",
)
def redis_memory(redis: RedisStreamsResource) -> AssetCheckResult:
    memory = redis_memory_or_none(redis.client())
    if memory is None:
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.WARN,
            description="the pipeline's Redis user may not run INFO: write the ACL file again (iot-etl "
            "redis-acl) and reload it",
        )
    return AssetCheckResult(
        passed=not memory.under_pressure,
        severity=AssetCheckSeverity.WARN,
        description=memory.describe(),
        metadata={
            "used_bytes": MetadataValue.int(memory.used_bytes),
            "maxmemory_bytes": MetadataValue.int(memory.max_bytes),
            **(
                {"used_share": MetadataValue.float(round(memory.share, 4))}
                if memory.share is not None
                else {}
            ),
        },
    )
