"""Pruning old runs: micro-batch runs older than the run retention, each hour summarised first.

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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from dagster import AssetKey, AssetMaterialization, DagsterInstance, DagsterRunStatus, RunRecord, RunsFilter

from dagster_project.defs.maintenance.run_deletion import delete_runs
from dagster_project.defs.metadata import hour_summary_metadata
from dagster_project.defs.quality.freshness_check import SCHEDULE_NAME as FRESHNESS_SCHEDULE_NAME
from dagster_project.lib.hour_summaries import mark_summarised, summarised

MICRO_TAG = ("iot/kind", "micro")


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


@dataclass(slots=True)
class Pruned:
    runs_deleted: int = 0
    hours_summarised: list[str] = field(default_factory=list)
    done: bool = True


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
