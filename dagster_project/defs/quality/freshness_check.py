"""The freshness check on `telemetry`'s hour partitions, and the schedule that evaluates it at each deadline.

At a tick of the deadline cron (`IOT_FRESHNESS_DEADLINE_CRON`, UTC) the hour that tick falls in is due (the
partitions end one hour ahead): at HH:15 the check passes once hour HH has been materialized, that is once a
micro-batch run of one of its first windows has finished, and fails (WARN) otherwise. Its schedule runs it
once per tick, no more often than the deadline needs, and its verdict is the run's `AssetCheckResult`,
which the check page shows. An hour before the partitions' start (the installation's hour) is not judged:
the check passes saying that nothing is due yet. A run from the UI judges the latest tick before it.

Dagster's `build_time_partition_freshness_checks` judged the hour before the installation (whose deadline
tick precedes the first partition) and its sensor asked for a run every minute while the check had no
result; `FreshnessPolicy` judges the newest materialization of any partition, so with the open hour
materialized every minute it cannot tell that an hour is overdue.
"""

from datetime import UTC, datetime

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    Config,
    MetadataValue,
    asset_check,
)

# The one helper Dagster's own freshness checks use for "the latest tick of a cron before now".
from dagster_project import dagster_internals
from dagster_project.defs.partitions import KEY_FORMAT, start_time
from dagster_project.lib.freshness import due_hour, judge

#: The check on `telemetry` (the name Dagster's factory gave it, kept for links to its page).
TELEMETRY_FRESHNESS_CHECK = AssetCheckKey(AssetKey("telemetry"), "freshness_check")


SCHEDULE_NAME = "freshness_check_schedule"


JOB_NAME = "freshness_check_job"


#: The check's op, whose config carries the deadline the schedule runs it for.
CHECK_OP = f"{TELEMETRY_FRESHNESS_CHECK.asset_key.to_python_identifier()}_{TELEMETRY_FRESHNESS_CHECK.name}"


class FreshnessConfig(Config):
    """The deadline tick judged (Unix seconds), set by the schedule; 0 judges the latest tick before now."""

    deadline_timestamp: float = 0.0


def build_freshness_check(deadline_cron: str, partitions_start: str) -> AssetChecksDefinition:
    """The freshness check on `telemetry` for partitions from `partitions_start` (`YYYY-MM-DD-HH:00`)."""
    start = start_time(partitions_start)
    asset_key = TELEMETRY_FRESHNESS_CHECK.asset_key

    @asset_check(
        asset=asset_key,
        name=TELEMETRY_FRESHNESS_CHECK.name,
        description=f"Warns when the hour a tick of `{deadline_cron}` (UTC) falls in has not been "
        "materialized by then; hours before the partitions' start are not judged.",
    )
    def freshness_check(context: AssetCheckExecutionContext, config: FreshnessConfig) -> AssetCheckResult:
        if config.deadline_timestamp:
            deadline = datetime.fromtimestamp(config.deadline_timestamp, UTC)
        else:
            deadline = dagster_internals.get_latest_completed_cron_tick(
                deadline_cron, datetime.now(UTC), "UTC"
            )
        key = due_hour(deadline).strftime(KEY_FORMAT)
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=asset_key, asset_partitions=[key]), limit=1
        ).records
        ever = context.instance.get_latest_materialization_event(asset_key) is not None
        verdict = judge(deadline, start, bool(records), ever)
        metadata: dict[str, MetadataValue] = {"deadline": MetadataValue.timestamp(deadline)}
        if verdict.hour_key is not None:
            metadata["hour"] = MetadataValue.text(verdict.hour_key)
        return AssetCheckResult(
            passed=verdict.passed,
            # a late hour warns; `device_freshness` fails (ERROR) when nothing arrives at all
            severity=AssetCheckSeverity.WARN,
            description=verdict.description,
            metadata=metadata,
        )

    return freshness_check
