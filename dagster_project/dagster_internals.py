"""Every use of Dagster's private modules (`dagster._*`), named once here; nothing else imports them.

Dagster keeps no promise for these between releases (`_execute_run_command_body` alone changed its
signature at least four times). `PRIVATE` maps each name the project uses to the module it lives in, loaded
on first use (`from dagster_project.dagster_internals import X`), so importing this module costs nothing
on the run path. `tests/dagster_project/test_dagster_internals.py` resolves every entry and checks the
signatures relied on: an upgrade that moves or changes one fails there by name, not in a run.

Who uses what:
- the forking run launcher (`run_launcher`): the launcher base classes, how `dagster api execute_run`
  executes a run (`execute_run`, `worker_instance`), the private modules its forkserver preloads
  (`FORKSERVER_PRELOAD`), and the prefix of the run tags the UI does not show (`HIDDEN_TAG_PREFIX`);
- run deletion (`run_deletion`): the bulk delete of finished runs (`delete_runs_in_bulk`), only on the
  Dagster versions it was checked against (`bulk_delete_supported`);
- `iot_etl.code_server`: the gRPC client that pings the code server;
- the benchmarks (`bench.runs_ui`): Dagster's storage tables and event classes to write synthetic runs;
- `iot-etl status`: the newest evaluated executions of each check (`completed_check_executions`);
- `jobs`: the type `define_asset_job` returns;
- `iot_etl.dagster_instance` and the deployment tests: an instance configuration and a configurable
  class's config checked as Dagster checks them when it loads them (`check_instance_config`,
  `configurable_class_config`), without opening storage or constructing a run launcher.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dagster

if TYPE_CHECKING:
    from dagster import DagsterInstance

#: name -> the private module that defines it (the name is the attribute's, except where noted).
PRIVATE: dict[str, str] = {
    # the run launcher (run_launcher.py)
    "RunLauncher": "dagster._core.launcher",
    "LaunchRunContext": "dagster._core.launcher",
    "CheckRunHealthResult": "dagster._core.launcher",
    "WorkerStatus": "dagster._core.launcher",
    "ConfigurableClass": "dagster._serdes",
    "ConfigurableClassData": "dagster._serdes",
    "InstanceRef": "dagster._core.instance",
    "capture_interrupts": "dagster._utils.interrupts",
    "get_instance_for_cli": "dagster._cli.utils",
    "_execute_run_command_body": "dagster._cli.api",
    # run deletion (run_deletion.py) and the benchmarks' bulk writes
    "SqlRunStorage": "dagster._core.storage.runs.sql_run_storage",
    "RunsTable": "dagster._core.storage.runs.schema",
    "RunTagsTable": "dagster._core.storage.runs.schema",
    "SqlEventLogStorage": "dagster._core.storage.event_log.sql_event_log",
    "SqliteEventLogStorage": "dagster._core.storage.event_log.sqlite.sqlite_event_log",
    "SqlEventLogStorageTable": "dagster._core.storage.event_log.schema",
    "AssetCheckExecutionsTable": "dagster._core.storage.event_log.schema",
    # `iot-etl status`: the newest completed evaluations of a check (`completed_check_executions`)
    "AssetCheckExecutionRecordStatus": "dagster._core.storage.asset_check_execution_record",
    # the freshness check run by hand: the deadline tick before now (freshness.py)
    "get_latest_completed_cron_tick": "dagster._utils.schedules",
    # the benchmarks' synthetic runs (bench/runs_ui/synth.py)
    "AssetMaterializationPlannedData": "dagster._core.events",
    "StepMaterializationData": "dagster._core.events",
    "PARTITION_NAME_TAG": "dagster._core.storage.tags",
    "RUN_KEY_TAG": "dagster._core.storage.tags",
    "SENSOR_NAME_TAG": "dagster._core.storage.tags",
    # run_launcher.py: tags under this prefix are kept on the run but not shown (GraphQL leaves them out)
    "HIDDEN_TAG_PREFIX": "dagster._core.storage.tags",
    # iot_etl/code_server.py
    "DagsterGrpcClient": "dagster._grpc.client",
    # jobs.py (a return type)
    "UnresolvedAssetJobDefinition": "dagster._core.definitions.unresolved_asset_job_definition",
    # instance configuration checked as Dagster loads it (check_instance_config, configurable_class_config)
    "dagster_instance_config": "dagster._core.instance.config",
    "process_config": "dagster._config",
    "resolve_to_config_type": "dagster._config",
}
#: The classes behind `storage:` in dagster.yaml (what `InstanceRef.from_dir` builds from each kind).
STORAGE_CLASSES = {
    "postgres": ("dagster_postgres", "DagsterPostgresStorage"),
    "sqlite": ("dagster._core.storage.sqlite_storage", "DagsterSqliteStorage"),
}

#: Private modules the run launcher's forkserver imports once so that run workers start with them: how a
#: run is executed, and the SQLite instance storage every worker opens (SQLAlchemy and Alembic: 0.3 CPU-s
#: a run otherwise).
FORKSERVER_PRELOAD: tuple[str, ...] = (
    "dagster._cli.api",
    "dagster._core.execution.api",
    "dagster._core.storage.sqlite_storage",
    "dagster._core.storage.event_log.sqlite.sqlite_event_log",
    "dagster._core.storage.runs.sqlite.sqlite_run_storage",
    "dagster._core.storage.schedules.sqlite.sqlite_schedule_storage",
)

#: Dagster versions (prefixes of `dagster.__version__`) whose run and event tables `delete_runs_in_bulk`
#: was checked against (tests/dagster_project/test_compaction.py: what it leaves is what `delete_run` leaves).
BULK_DELETE_CHECKED = ("1.13.",)
#: The files of an SQLite instance's per-run event database (`<run_id>.db` and its write-ahead log).
SHARD_SUFFIXES = ("", "-wal", "-shm")


class DagsterInternalsError(RuntimeError):
    """A private Dagster name or module this project relies on is not where it was."""


def __getattr__(name: str) -> Any:
    module = PRIVATE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise DagsterInternalsError(
            f"dagster {dagster.__version__} has no {module}.{name}: "
            "update dagster_project/dagster_internals.py"
        ) from exc
    globals()[name] = value
    return value


def module_exists(name: str) -> bool:
    """Whether module `name` can be found on the path, without importing it or its parent packages."""
    parts = name.split(".")
    path: Sequence[str] | None = None
    for depth in range(1, len(parts) + 1):
        fullname = ".".join(parts[:depth])
        module = sys.modules.get(fullname)
        spec = (
            module.__spec__
            if module is not None
            else importlib.machinery.PathFinder.find_spec(fullname, path)
        )
        if spec is None:
            return False
        path = spec.submodule_search_locations
        if path is None and depth < len(parts):
            return False
    return True


def require_modules(names: Sequence[str]) -> None:
    """Raise DagsterInternalsError naming every module of `names` that cannot be found."""
    missing = [name for name in names if not module_exists(name)]
    if missing:
        raise DagsterInternalsError(
            f"modules to preload are missing: {', '.join(missing)} (dagster {dagster.__version__}); "
            "update the preload list (dagster_project/dagster_internals.py, run_launcher.py)"
        )


def execute_run(run_id: str, instance: DagsterInstance) -> None:
    """Execute the run `run_id` in this process as `dagster api execute_run` does."""
    from dagster._cli.api import _execute_run_command_body

    _execute_run_command_body(run_id, instance, lambda _event: None, set_exit_code_on_failure=False)


@contextlib.contextmanager
def worker_instance(instance_ref: str) -> Iterator[DagsterInstance]:
    """The instance a run worker opens from its serialized reference, with interrupts captured (SIGINT
    and SIGTERM become KeyboardInterrupt inside the run's steps) as `dagster api execute_run` has them."""
    from dagster._cli.utils import get_instance_for_cli
    from dagster._core.instance import InstanceRef
    from dagster._utils.interrupts import capture_interrupts

    with (
        capture_interrupts(),
        get_instance_for_cli(instance_ref=dagster.deserialize_value(instance_ref, InstanceRef)) as instance,
    ):
        yield instance


def bulk_delete_checked(version: str) -> bool:
    """Whether `delete_runs_in_bulk` was checked against Dagster `version`'s run and event tables."""
    return version.startswith(BULK_DELETE_CHECKED)


def bulk_delete_supported(instance: DagsterInstance) -> bool:
    """Whether `delete_runs_in_bulk` may be used: a Dagster version it was checked against, with the
    instance's runs and events in SQL tables."""
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
    from dagster._core.storage.runs.sql_run_storage import SqlRunStorage

    return (
        bulk_delete_checked(dagster.__version__)
        and isinstance(instance.run_storage, SqlRunStorage)
        and isinstance(instance.event_log_storage, SqlEventLogStorage)
    )


def delete_runs_in_bulk(instance: DagsterInstance, run_ids: Sequence[str]) -> None:
    """Delete finished runs with what `DagsterInstance.delete_run` deletes, in two transactions: each run's
    events and asset event tags through the storage's own `delete_events_for_run`, then the runs' rows and
    tags. Concurrency slots are not visited: a finished run holds none. On SQLite storage the run's own
    database file goes too (`delete_run` empties it but leaves it). Only where `bulk_delete_supported`."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
    from dagster._core.storage.runs.schema import RunsTable, RunTagsTable

    if not bulk_delete_supported(instance):
        raise DagsterInternalsError(f"no bulk run deletion on dagster {dagster.__version__} or this storage")
    ids = list(run_ids)
    runs, events = instance.run_storage, instance.event_log_storage
    with events.index_transaction() as conn:  # ty: ignore[unresolved-attribute]
        for run_id in ids:
            events.delete_events_for_run(conn, run_id)  # ty: ignore[unresolved-attribute]
    with runs.connect() as conn:  # ty: ignore[unresolved-attribute]
        conn.execute(RunTagsTable.delete().where(RunTagsTable.c.run_id.in_(ids)))
        conn.execute(RunsTable.delete().where(RunsTable.c.run_id.in_(ids)))
    if isinstance(events, SqliteEventLogStorage):
        for run_id in ids:
            for suffix in SHARD_SUFFIXES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(events.path_for_shard(run_id) + suffix)


def completed_check_executions(instance: DagsterInstance, key: Any, limit: int) -> list[Any]:
    """The newest evaluated (passed or failed) executions of asset check `key`, newest first: the event log
    storage's check history, which Dagster's public API does not offer."""
    status = __getattr__("AssetCheckExecutionRecordStatus")
    history = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=limit, status={status.SUCCEEDED, status.FAILED}
    )
    return list(history)


def configurable_class_config(module: str, class_name: str, config: Mapping[str, Any]) -> Mapping[str, Any]:
    """`config` processed by the class's own `config_type()`, as `ConfigurableClassData.rehydrate` does
    before it constructs the class (defaults filled in, `{env: NAME}` read from the environment); the class
    is imported, not constructed. DagsterInvalidConfigError when the config does not fit."""
    from dagster._config import process_config, resolve_to_config_type
    from dagster._serdes import ConfigurableClassData

    # the module as the instance names it: `dagster.core.*` is Dagster's public alias of `dagster._core.*`
    module = ConfigurableClassData(module, class_name, "{}").module_name
    klass = getattr(importlib.import_module(module), class_name)
    result = process_config(resolve_to_config_type(klass.config_type()), dict(config))
    if not result.success:
        raise dagster.DagsterInvalidConfigError(
            f"Errors in the config of {module}.{class_name}", result.errors, config
        )
    return result.value or {}


def check_instance_config(home: str | os.PathLike[str]) -> dict[str, Mapping[str, Any]]:
    """`home`/dagster.yaml checked as loading the instance checks it, without opening its storage or
    constructing its classes: the instance's schema, then each configurable class (storage, run launcher,
    run coordinator, compute logs, scheduler) against its own. Returns each class's processed config by
    key (`storage` for the `storage:` block); DagsterInvalidConfigError at the first that does not fit."""
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(os.fspath(home))
    processed: dict[str, Mapping[str, Any]] = {}
    for key, block in config.items():
        if key == "storage":
            [(kind, storage_config)] = block.items()
            module, class_name = (
                (storage_config["module"], storage_config["class"])
                if kind == "custom"
                else STORAGE_CLASSES[kind]
            )
            inner = storage_config.get("config", {}) if kind == "custom" else storage_config
            processed[key] = configurable_class_config(module, class_name, inner or {})
        elif isinstance(block, Mapping) and {"module", "class"} <= set(block):
            processed[key] = configurable_class_config(
                block["module"], block["class"], block.get("config") or {}
            )
    return processed
