"""Asset checks, per hour partition: they run with every micro-batch and from the UI on any partition.

In a micro-batch run a check looks at its hour up to the end of the run's range; run on its own it looks
at the partition's hours as far as they have closed.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)

from dagster_project.partitions import hourly_arrival_partitions
from dagster_project.resources import BatchPolicyResource, DatabaseResource, RedisStreamsResource
from dagster_project.storage import landed_ranges, reconcile
from dagster_project.windows import Window, hours_window, uncovered
from iot_core.streams import EntryId, utc_from_ms

RUN_END_TAG = "iot/end_id"
SAMPLE = 10


def checked_window(
    context: AssetCheckExecutionContext, policy: BatchPolicyResource, redis: RedisStreamsResource
) -> Window:
    """The partitions' hours, up to the end of the run's range (micro-batch runs) or up to what has
    closed (anything else)."""
    keys = context.partition_key_range
    hours = hours_window(keys.start, keys.end)
    end_id = context.run.tags.get(RUN_END_TAG)
    if end_id:
        return hours.until(EntryId.parse(end_id).ms + 1)
    return hours.until(policy.closed_until_ms(redis, redis.client()))


@asset_check(
    asset="raw_messages",
    partitions_def=hourly_arrival_partitions,
    description="Every closed window of the hour that holds stream entries has been archived. "
    "A window missing here is run again by the sensor; the check names it until it is archived.",
)
def archive_complete(
    context: AssetCheckExecutionContext,
    redis: RedisStreamsResource,
    database: DatabaseResource,
    policy: BatchPolicyResource,
) -> AssetCheckResult:
    window = checked_window(context, policy, redis)
    with database.connect() as conn:
        ranges = landed_ranges(conn, utc_from_ms(window.start_ms), utc_from_ms(window.end_ms))
    client = redis.client()
    missing = [
        gap
        for gap in uncovered(ranges, window.start_ms, window.end_ms)
        if redis.has_entries(client, gap.start_ms, gap.end_ms)
    ]
    return AssetCheckResult(
        passed=not missing,
        severity=AssetCheckSeverity.ERROR,
        description=None
        if not missing
        else f"{len(missing)} range(s) with stream entries are not archived, the first "
        f"{missing[0].short_label}: the sensor runs them again; if this persists, backfill the hour",
        metadata={
            "checked": window.label,
            "archived_ranges": len(ranges),
            "missing_ranges": len(missing),
            "missing_sample": MetadataValue.md(
                "\n".join(f"- {gap.short_label}" for gap in missing[:SAMPLE]) or "none"
            ),
        },
    )


@asset_check(
    asset="telemetry",
    partitions_def=hourly_arrival_partitions,
    blocking=True,
    description="Every archived raw message of the hour so far is a fact row (measurement or event) or a "
    "rejection with its reason; failing names the raw ids that are neither.",
)
def reconciliation(
    context: AssetCheckExecutionContext,
    redis: RedisStreamsResource,
    database: DatabaseResource,
    policy: BatchPolicyResource,
) -> AssetCheckResult:
    window = checked_window(context, policy, redis)
    with database.connect() as conn:
        rec = reconcile(conn, utc_from_ms(window.start_ms), utc_from_ms(window.end_ms), SAMPLE)
    return AssetCheckResult(
        passed=rec.unaccounted == 0,
        severity=AssetCheckSeverity.ERROR,
        description=None
        if rec.unaccounted == 0
        else f"{rec.unaccounted} raw message(s) are neither stored nor rejected: backfill the hour",
        metadata={
            "checked": window.label,
            "raw": rec.raw,
            "with_facts": rec.with_facts,
            "rejected": rec.rejected,
            "unaccounted": rec.unaccounted,
            "unaccounted_raw_ids": MetadataValue.text(
                ", ".join(str(raw_id) for raw_id in rec.unaccounted_sample) or "none"
            ),
        },
    )
