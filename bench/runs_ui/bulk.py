"""Many synthetic runs per transaction on Dagster's PostgreSQL storage, rows built by Dagster's own code.

`synth.write_runs` goes through the storage methods one run and one event at a time; dagster-postgres
opens a new connection for every call (no pool), so on a loaded 2-core machine that is ~1 run/s. Here
a chunk of runs goes in a handful of statements, each row made by the storage's own row builders:
`_get_run_insertion_values` and the run tags for `runs`/`run_tags` (with status SUCCESS and start/end
times as `handle_run_event` sets them), `prepare_insert_event_batch` for `event_logs`,
`_store_asset_event_tags` and `_store_asset_event` (the asset's latest-event row) for the asset index,
and the `asset_check_executions` row that `_update_asset_check_evaluation` inserts. Only for storages
that keep every run's events in one table (PostgreSQL), not SQLite's database per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, EventLogEntry, serialize_value

from bench.runs_ui.synth import (
    ASSETS,
    CREATED_S,
    ENDED_S,
    STARTED_S,
    Planned,
    check_evaluation,
    materialization,
    planned_event,
    run_event,
)
from dagster_project.dagster_internals import (
    AssetCheckExecutionsTable,
    RunsTable,
    RunTagsTable,
    SqlEventLogStorage,
    SqlEventLogStorageTable,
    SqlRunStorage,
)
from iot_core.streams import utc_from_ms

SUCCEEDED = "SUCCEEDED"  # AssetCheckExecutionRecordStatus.SUCCEEDED.value


def _at(seconds: float) -> datetime:
    return utc_from_ms(int(seconds * 1000))


def supported(instance: DagsterInstance) -> bool:
    events = instance.event_log_storage
    return isinstance(events, SqlEventLogStorage) and type(events).__name__ == "PostgresEventLogStorage"


def run_rows(storage: SqlRunStorage, chunk: Sequence[Planned]) -> tuple[list[dict], list[dict]]:
    # `_get_run_insertion_values` asks the database (reflection, a new connection) whether the column
    # exists for every run; the answer cannot change within a chunk
    has_column = storage.has_backfill_id_column()
    storage.has_backfill_id_column = lambda: has_column  # ty: ignore[invalid-assignment]
    runs, tags = [], []
    for planned in chunk:
        run = planned.run.with_status(DagsterRunStatus.SUCCESS)
        values = storage._get_run_insertion_values(run, _at(planned.closed_s + CREATED_S))
        values.update(
            start_time=planned.closed_s + STARTED_S,
            end_time=planned.closed_s + ENDED_S,
            update_timestamp=_at(planned.closed_s + ENDED_S),
        )
        runs.append(values)
        tags += [{"run_id": run.run_id, "key": k, "value": v} for k, v in run.tags_for_storage().items()]
    del storage.has_backfill_id_column
    return runs, tags


def chunk_events(chunk: Sequence[Planned], rng, checks: bool) -> list[EventLogEntry]:
    """The chunk's events in the order a run writes them, run after run."""
    events: list[EventLogEntry] = []
    for planned in chunk:
        events.append(run_event(planned, DagsterEventType.RUN_START, planned.closed_s + STARTED_S))
        events += [planned_event(planned, asset) for asset in ASSETS]
        events += [materialization(planned, asset, rng) for asset in ASSETS]
        if checks:
            events.append(check_evaluation(planned))
        events.append(run_event(planned, DagsterEventType.RUN_SUCCESS, planned.closed_s + ENDED_S))
    return events


def check_row(event: EventLogEntry, event_id: int) -> dict:
    evaluation = event.get_dagster_event().event_specific_data
    return {
        "asset_key": evaluation.asset_key.to_string(),  # ty: ignore[unresolved-attribute]
        "check_name": evaluation.check_name,  # ty: ignore[unresolved-attribute]
        "run_id": event.run_id,
        "execution_status": SUCCEEDED,
        "evaluation_event": serialize_value(event),
        "evaluation_event_timestamp": _at(event.timestamp).replace(tzinfo=None),
        "evaluation_event_storage_id": event_id,
        "materialization_event_storage_id": None,
        "partition": evaluation.partition,  # ty: ignore[unresolved-attribute]
    }


def write_chunk(instance: DagsterInstance, chunk: Sequence[Planned], rng, checks: bool) -> None:
    runs_storage = instance.run_storage
    events_storage = instance.event_log_storage
    assert isinstance(runs_storage, SqlRunStorage) and isinstance(events_storage, SqlEventLogStorage)
    runs, tags = run_rows(runs_storage, chunk)
    with runs_storage.connect() as conn:
        conn.execute(RunsTable.insert(), runs)
        conn.execute(RunTagsTable.insert(), tags)
    events = chunk_events(chunk, rng, checks)
    with events_storage.index_transaction() as conn:
        statement = events_storage.prepare_insert_event_batch(events).returning(SqlEventLogStorageTable.c.id)
        ids = [int(row[0]) for row in conn.execute(statement).fetchall()]
        asset_events = [(e, i) for e, i in zip(events, ids, strict=True) if e.get_dagster_event().asset_key]
        materialized = [
            (e, i) for e, i in asset_events if e.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION
        ]
        events_storage._store_asset_event_tags(
            conn, [e for e, _ in materialized], [i for _, i in materialized]
        )
        latest: dict[tuple, tuple[EventLogEntry, int]] = {}
        for event, event_id in asset_events:
            if event.dagster_event_type != DagsterEventType.ASSET_CHECK_EVALUATION:
                latest[(event.get_dagster_event().asset_key, event.dagster_event_type)] = (event, event_id)
        for event, event_id in latest.values():
            events_storage._store_asset_event(conn, event, event_id)
        checked = [
            check_row(e, i)
            for e, i in zip(events, ids, strict=True)
            if e.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        ]
        if checked:
            conn.execute(AssetCheckExecutionsTable.insert(), checked)
