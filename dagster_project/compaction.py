"""What the `compaction` asset does: trim archived stream entries, apply retention, prune old runs.

Stream entries go only below the oldest entry that is not safely archived: the first range of arrival
time, from the stream's first entry on, that holds entries of this shard and is not covered by a batch
whose range was landed in `raw_messages` (`batches.landed_at`). Nothing younger than the safety margin
goes either, archived or not, so a re-run of a recent window can still read the stream, unless Redis is
under memory pressure (`trim_horizon_ms`): then the margin gives way and every archived entry goes.

Micro-batch runs older than the run retention are deleted in batches with what `instance.delete_run`
deletes (Dagster has no run retention of its own; see `run_deletion`), their materializations included:
before the first run of an hour goes, the hour gets ONE summary materialization of each asset with the
hour's totals from the tables, so the partition stays materialized and the metadata plots show whole hours.
Runs created in the hour that is still open are never deleted, whatever the retention: its totals are not
final, and its runs' materializations are its only record until it closes. An hour gets a second summary
only when one of its runs being deleted finished after its summary was written (a re-run, a late last
window), so the newest materialization of every hour always carries its totals.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
import redis as redis_lib
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DagsterRunStatus,
    MetadataValue,
    RunRecord,
    RunsFilter,
)

from dagster_project.freshness import SCHEDULE_NAME as FRESHNESS_SCHEDULE_NAME
from dagster_project.retention import (
    HourCounts,
    Removed,
    RetentionRule,
    apply_retention_policy,
    apply_timescale_policies,
    continuous_aggregates,
    delete_older,
    drop_old_chunks,
    hour_counts,
    hour_summary,
    hypertables,
    mark_summarised,
    summarised,
)
from dagster_project.run_deletion import delete_runs
from dagster_project.storage import landed_ranges
from dagster_project.verdicts import judged_so_far
from dagster_project.windows import Window, partition_window, uncovered
from iot_core.redis_memory import RedisMemory
from iot_core.streams import EntryId, id_range, utc_from_ms

MICRO_TAG = ("iot/kind", "micro")
#: The name the hour's counts so far are kept under with the checks' verdicts (see `counted_so_far`).
HOUR_COUNTS = "hour_counts"
#: Runs the sensor requests (a window, a whole hour, a window run again): pruned with hour summaries.
SENSOR_RUN_KINDS = ("micro", "hour", "heal")
#: Unpartitioned runs that recur for ever (job name or schedule tag): pruned past the retention, the newest
#: of each kept so that its asset or check keeps its latest result.
MAINTENANCE_RUNS = (
    RunsFilter(job_name="compaction_job"),
    RunsFilter(tags={"dagster/schedule_name": FRESHNESS_SCHEDULE_NAME}),
)
PARTITION_TAG = "dagster/partition"
SUMMARY_ASSETS = ("raw_messages", "telemetry")
FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


def trim_horizon_ms(now_ms: int, margin_ms: int, grace_ms: int, memory: RedisMemory | None) -> int:
    """The arrival time (ms) below which archived entries may be trimmed. Normally the margin keeps recent
    archived entries for re-runs; under memory pressure (`RedisMemory.under_pressure`; `memory` None when
    unknown) it gives way, because a full Redis (`noeviction`) stops the listener acknowledging, and only
    the grace is kept (a window still closing). Unarchived entries are never trimmed either way:
    `trim_stream` stops at the first."""
    pressed = memory is not None and memory.under_pressure
    return now_ms - max(0 if pressed else margin_ms, grace_ms)


def keep_from_ms(
    ranges: list[tuple[int, int]], first_ms: int, horizon_ms: int, has_entries: Callable[[Window], bool]
) -> int:
    """The arrival time (ms) from which a stream's entries must be kept: the start of the first range in
    [first_ms, horizon_ms) that no archived range covers and that holds entries, else the horizon."""
    for gap in uncovered(ranges, first_ms, horizon_ms):
        if has_entries(gap):
            return gap.start_ms
    return max(first_ms, horizon_ms)


@dataclass(frozen=True, slots=True)
class Trimmed:
    stream: str
    kept_from_ms: int
    entries: int
    bytes_freed: int


def unarchived_from_ms(
    client: redis_lib.Redis, conn: psycopg.Connection, stream: str, first_ms: int, until_ms: int
) -> int:
    """Where the stream's not safely archived entries begin, looking at [first_ms, until_ms); `until_ms`
    (or `first_ms`, if later) when every entry before it is archived."""
    ranges = landed_ranges(conn, utc_from_ms(first_ms), utc_from_ms(until_ms))

    def has_entries(gap: Window) -> bool:
        low, high = id_range(gap.start_ms, gap.end_ms)
        return bool(client.xrange(stream, low, high, count=1))

    return keep_from_ms(ranges, first_ms, until_ms, has_entries)


def trim_stream(
    client: redis_lib.Redis, conn: psycopg.Connection, stream: str, horizon_ms: int
) -> Trimmed | None:
    """XTRIM one shard below its oldest entry that is not safely archived; None for an empty stream."""
    first = client.xrange(stream, "-", "+", count=1)
    if not first:
        return None
    first_ms = EntryId.parse(first[0][0]).ms
    if first_ms >= horizon_ms:
        return Trimmed(stream, first_ms, 0, 0)
    keep_ms = unarchived_from_ms(client, conn, stream, first_ms, horizon_ms)
    before = int(client.memory_usage(stream) or 0)
    entries = int(client.xtrim(stream, minid=f"{keep_ms}-0", approximate=False))
    after = int(client.memory_usage(stream) or 0)
    return Trimmed(stream, keep_ms, entries, max(0, before - after))


@dataclass(slots=True)
class RetentionOutcome:
    removed: list[Removed] = field(default_factory=list)
    policies_changed: list[str] = field(default_factory=list)


def apply_retention(
    conn: psycopg.Connection,
    rules: list[RetentionRule],
    now: datetime,
    batch_rows: int,
    deadline: float,
    chunk_interval: str,
    compress_after: str,
) -> RetentionOutcome:
    """Hypertables: policies from the settings, then their old chunks dropped now; continuous aggregates:
    the same for the retention policy; plain tables: old rows deleted in bounded batches. `conn` is in
    autocommit mode."""
    outcome = RetentionOutcome()
    hyper = hypertables(conn)
    aggregates = continuous_aggregates(conn)
    for rule in rules:
        if rule.table in hyper:
            outcome.policies_changed += apply_timescale_policies(
                conn, rule.table, chunk_interval, compress_after, rule.days
            )
        elif rule.table in aggregates:
            outcome.policies_changed += apply_retention_policy(conn, rule.table, rule.days)
        if not rule.days:
            continue
        cutoff = now - timedelta(days=rule.days)
        if rule.table in hyper or rule.table in aggregates:
            outcome.removed.append(drop_old_chunks(conn, rule.table, cutoff))
        else:
            outcome.removed.append(delete_older(conn, rule, cutoff, batch_rows, deadline))
    return outcome


@dataclass(slots=True)
class Pruned:
    runs_deleted: int = 0
    hours_summarised: list[str] = field(default_factory=list)
    done: bool = True


def summary_metadata(summary: dict[str, object]) -> dict[str, object]:
    reasons = summary["reject_reasons"]
    assert isinstance(reasons, dict)
    return {
        **{k: v for k, v in summary.items() if k != "reject_reasons" and v is not None},
        **reasons_metadata(reasons),
        "summary_of_hour": True,
    }


def reasons_metadata(reasons: dict[str, int]) -> dict[str, object]:
    """Rejections by reason: a list to read, and one number per reason that the UI plots."""
    return {
        "reject_reasons": MetadataValue.md("\n".join(f"- {r}: {n}" for r, n in reasons.items()) or "none"),
        **{f"rejected_{reason}": n for reason, n in reasons.items()},
    }


def hour_summary_metadata(
    conn: psycopg.Connection, key: str, counts: HourCounts | None = None
) -> dict[str, object]:
    """The totals of hour partition `key` so far, as plottable metadata (its `counts` read from the
    tables when None)."""
    window = partition_window(key)
    summary = hour_summary(conn, *window.utc_bounds, counts)
    return {"range": window.label, **summary_metadata(summary)}


def counted_so_far(conn: psycopg.Connection, key: str, end: datetime) -> tuple[HourCounts, datetime]:
    """The counts of hour partition `key` up to `end`, and where they began to be read: only what
    follows the counts an earlier run of the hour kept, while they still hold (see `verdicts`); these are
    kept in turn for the next run. `conn` must be fresh."""
    start = partition_window(key).utc_bounds[0]
    return judged_so_far(
        conn, HOUR_COUNTS, start, end, lambda since, until: hour_counts(conn, since, until), lambda _: True
    )


def summarise_hour(instance: DagsterInstance, conn: psycopg.Connection, key: str) -> None:
    """One materialization per asset with the hour's totals, then remember that the hour has it."""
    metadata = hour_summary_metadata(conn, key)
    for asset in SUMMARY_ASSETS:
        instance.report_runless_asset_event(
            AssetMaterialization(
                asset_key=AssetKey(asset),
                partition=key,
                description="Summary of the whole hour, written before its micro-batch runs were deleted.",
                metadata=metadata,
            )
        )
    mark_summarised(conn, key)


def prune_before(now: datetime, retention_days: float) -> datetime:
    """Runs created before this instant may be deleted: those older than the retention, but none created
    in the open hour. The sensor creates a window's run at most its lead before the window closes, and the
    lead is shorter than a window, so a run created before the open hour began is of a closed hour."""
    open_hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return min(now - timedelta(days=retention_days), open_hour)


def _ended(records: list[RunRecord], key: str) -> datetime:
    """When the last of the runs of hour `key` among `records` finished."""
    ends = [
        r.end_time or r.update_timestamp.timestamp()
        for r in records
        if r.dagster_run.tags.get(PARTITION_TAG) == key
    ]
    return datetime.fromtimestamp(max(ends), UTC)


def prune_runs(
    instance: DagsterInstance,
    conn: psycopg.Connection,
    before: datetime,
    deadline: float,
    page: int = 200,
    batch: int = 50,
) -> Pruned:
    """Delete finished runs the sensor requested (`SENSOR_RUN_KINDS`) created before `before` (see
    `prune_before`), oldest first, each hour summarised before its first run goes and again when a run of it
    finished after its summary, `batch` runs per deletion (`run_deletion.delete_runs`), the deadline checked
    between batches; then the maintenance runs (`prune_maintenance_runs`). `conn` is in autocommit mode (a
    summary is recorded once written)."""
    pruned = Pruned()
    runs_filter = RunsFilter(
        tags={MICRO_TAG[0]: list(SENSOR_RUN_KINDS)}, statuses=FINISHED, created_before=before
    )
    while True:
        records = instance.get_run_records(
            runs_filter, limit=page, order_by="create_timestamp", ascending=True
        )
        if not records:
            prune_maintenance_runs(instance, before, deadline, pruned, page, batch)
            return pruned
        keys = sorted({key for r in records if (key := r.dagster_run.tags.get(PARTITION_TAG))})
        done = summarised(conn, keys)
        for key in keys:
            if key not in done or _ended(records, key) > done[key]:
                summarise_hour(instance, conn, key)
                pruned.hours_summarised.append(key)
        if not _delete_in_batches(instance, [r.dagster_run.run_id for r in records], batch, deadline, pruned):
            return pruned


def prune_maintenance_runs(
    instance: DagsterInstance, before: datetime, deadline: float, pruned: Pruned, page: int, batch: int
) -> None:
    """Finished `MAINTENANCE_RUNS` created before `before`, all but the newest of each, `batch` at a time
    while the deadline allows (counted into `pruned`)."""
    for selection in MAINTENANCE_RUNS:
        newest = instance.get_run_records(
            RunsFilter(job_name=selection.job_name, tags=selection.tags, statuses=FINISHED), limit=1
        )
        keep = {r.dagster_run.run_id for r in newest}
        runs_filter = RunsFilter(
            job_name=selection.job_name, tags=selection.tags, statuses=FINISHED, created_before=before
        )
        while True:
            records = instance.get_run_records(
                runs_filter, limit=page, order_by="create_timestamp", ascending=True
            )
            run_ids = [r.dagster_run.run_id for r in records if r.dagster_run.run_id not in keep]
            if not run_ids:
                break
            if not _delete_in_batches(instance, run_ids, batch, deadline, pruned):
                return


def _delete_in_batches(
    instance: DagsterInstance, run_ids: list[str], batch: int, deadline: float, pruned: Pruned
) -> bool:
    """Delete `run_ids`, `batch` per deletion (`run_deletion.delete_runs`), counted into `pruned`; False
    (and `pruned.done` False) when the deadline came before all were deleted."""
    for start in range(0, len(run_ids), batch):
        if time.monotonic() > deadline:
            pruned.done = False
            return False
        chunk = run_ids[start : start + batch]
        delete_runs(instance, chunk)
        pruned.runs_deleted += len(chunk)
    return True
