"""Deleting many finished runs at once, with what `DagsterInstance.delete_run` deletes, and on SQLite
storage also the run's own database file, which `delete_run` leaves behind.

`delete_run` costs three to five new database connections per run (dagster-postgres keeps no pool: the
run row, the run's events once through the "run" and once through the "index" connection, which on
PostgreSQL are the same tables, then its concurrency slots): 4.5 runs/s on a loaded 2-core machine, 32
hours for a year's backlog. Here a batch is two transactions: through Dagster's own
`delete_events_for_run`, each run's events and asset event tags in the index, then the runs' rows and
tags. Concurrency slots are not visited: a finished run holds none (Dagster frees them when the run
ends, and run monitoring frees a crashed run's after `free_slots_after_run_end_seconds`).

Dagster's SQLite storage keeps each run's events in a database of its own (`<run_id>.db`, about 150 KB
even for a small run: every table and index takes its pages) plus copies of the asset and run-status
events in the index. `delete_run` empties that file but leaves it, so pruning alone frees nothing on
disk and a year of micro-batch runs is half a million files; here the file goes with its run, as
Dagster's own `wipe` removes them. Storages that are not SQL (none in this project) get `delete_run`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

from dagster import DagsterInstance
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.schema import RunsTable, RunTagsTable
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage

SHARD_SUFFIXES = ("", "-wal", "-shm")


def batch_deletable(instance: DagsterInstance) -> bool:
    """Whether the instance's runs and events live in SQL tables that this module deletes from."""
    return isinstance(instance.run_storage, SqlRunStorage) and isinstance(
        instance.event_log_storage, SqlEventLogStorage
    )


def remove_run_shards(events: SqliteEventLogStorage, run_ids: Sequence[str]) -> None:
    for run_id in run_ids:
        for suffix in SHARD_SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(events.path_for_shard(run_id) + suffix)


def delete_runs(instance: DagsterInstance, run_ids: Sequence[str]) -> None:
    """Delete the finished runs `run_ids` with their events, in one batch where the storage allows."""
    if not run_ids:
        return
    runs, events = instance.run_storage, instance.event_log_storage
    if not (isinstance(runs, SqlRunStorage) and isinstance(events, SqlEventLogStorage)):
        for run_id in run_ids:
            instance.delete_run(run_id)
        return
    ids = list(run_ids)
    with events.index_transaction() as conn:
        for run_id in ids:
            events.delete_events_for_run(conn, run_id)
    with runs.connect() as conn:
        conn.execute(RunTagsTable.delete().where(RunTagsTable.c.run_id.in_(ids)))
        conn.execute(RunsTable.delete().where(RunsTable.c.run_id.in_(ids)))
    if isinstance(events, SqliteEventLogStorage):
        remove_run_shards(events, ids)
