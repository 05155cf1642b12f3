"""Deleting many finished runs at once, with what `DagsterInstance.delete_run` deletes.

`delete_run` costs three to five new database connections per run (dagster-postgres keeps no pool: run
row, the run's events once through the "run" and once through the "index" connection, which on PostgreSQL
are the same tables, then its concurrency slots): 4.5 runs/s on a loaded 2-core machine, 32 hours for a
year's backlog. On storages that keep every run's events in one database (PostgreSQL, consolidated
SQLite), a batch here is two transactions: the runs' rows (their tags go with them, `ON DELETE CASCADE`)
and, through Dagster's own `delete_events_for_run`, each run's events and asset event tags. Concurrency
slots are not visited: a finished run holds none (Dagster frees them when the run ends, and run monitoring
frees a crashed run's after `free_slots_after_run_end_seconds`). Other storages (SQLite's database per
run, the in-memory one) get `delete_run` run by run.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import DagsterInstance
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.schema import RunsTable
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage


def batch_deletable(instance: DagsterInstance) -> bool:
    """Whether the instance's runs and events live in SQL tables that one transaction can reach."""
    events = instance.event_log_storage
    return (
        isinstance(instance.run_storage, SqlRunStorage)
        and isinstance(events, SqlEventLogStorage)
        and not isinstance(events, SqliteEventLogStorage)  # a database per run
    )


def delete_runs(instance: DagsterInstance, run_ids: Sequence[str]) -> None:
    """Delete the finished runs `run_ids` with their events, in one batch where the storage allows."""
    if not run_ids:
        return
    if not batch_deletable(instance):
        for run_id in run_ids:
            instance.delete_run(run_id)
        return
    runs, events = instance.run_storage, instance.event_log_storage
    assert isinstance(runs, SqlRunStorage) and isinstance(events, SqlEventLogStorage)
    with events.index_transaction() as conn:
        for run_id in run_ids:
            events.delete_events_for_run(conn, run_id)
    with runs.connect() as conn:
        conn.execute(RunsTable.delete().where(RunsTable.c.run_id.in_(list(run_ids))))
