"""Dagster's private names the project relies on are all where `dagster_project.dagster_internals` says,
with the signatures it calls them with: an upgrade that moves one fails here by name. A module missing from
the forkserver's preload list is an error when the forkserver is made, not a silent skip."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import dagster_project.dagster_internals as internals
from dagster_project.dagster_internals import (
    FORKSERVER_PRELOAD,
    PRIVATE,
    DagsterInternalsError,
    bulk_delete_checked,
    module_exists,
    require_modules,
)
from dagster_project.run_launcher import PRELOAD, forkserver_context


@pytest.mark.parametrize("name", sorted(PRIVATE))
def test_every_private_name_is_where_the_adapter_says(name: str) -> None:
    value = getattr(internals, name)
    assert value is getattr(importlib.import_module(PRIVATE[name]), name)


def parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # ty: ignore[invalid-argument-type]


def test_the_signatures_the_project_calls_are_unchanged() -> None:
    assert parameters(internals._execute_run_command_body) == [
        "run_id",
        "instance",
        "write_stream_fn",
        "set_exit_code_on_failure",
    ]
    assert "instance_ref" in parameters(internals.get_instance_for_cli)
    assert parameters(internals.SqlEventLogStorage.delete_events_for_run) == ["self", "conn", "run_id"]
    assert parameters(internals.SqlEventLogStorage.index_transaction) == ["self"]
    assert parameters(internals.SqliteEventLogStorage.path_for_shard) == ["self", "run_id"]
    for table in (internals.RunsTable, internals.RunTagsTable):
        assert "run_id" in table.c
    assert parameters(internals.DagsterGrpcClient.ping) == ["self", "echo"]
    assert {"launch_run", "terminate"} <= internals.RunLauncher.__abstractmethods__
    assert {"RUNNING", "FAILED"} <= set(internals.WorkerStatus.__members__)
    assert internals.PARTITION_NAME_TAG == "dagster/partition"


def test_an_unknown_or_moved_name_is_an_error_that_names_it() -> None:
    with pytest.raises(AttributeError):
        internals.not_a_private_name  # noqa: B018
    # a name whose module lost it, as an upgrade would: resolved in a fresh interpreter
    code = (
        "import dagster_project.dagster_internals as i\n"
        "i.PRIVATE['RunsTable'] = 'dagster._core.storage.runs.moved_away'\n"
        "i.RunsTable\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "DagsterInternalsError" in done.stderr
    assert "dagster._core.storage.runs.moved_away.RunsTable" in done.stderr


def test_every_preloaded_module_exists_and_imports() -> None:
    assert set(FORKSERVER_PRELOAD) <= set(PRELOAD)
    require_modules(PRELOAD)
    for name in FORKSERVER_PRELOAD:
        importlib.import_module(name)


def test_a_missing_preload_module_is_an_error_naming_it() -> None:
    assert module_exists("dagster._cli.api") and module_exists("pandera.polars")
    assert not module_exists("dagster._core.moved_away") and not module_exists("no_such_top_level")
    with pytest.raises(DagsterInternalsError, match=r"missing: dagster\._core\.moved_away \(dagster"):
        forkserver_context([*PRELOAD, "dagster._core.moved_away"])
    with pytest.raises(DagsterInternalsError, match="no_such_top_level"):
        require_modules(["polars", "no_such_top_level"])


def test_bulk_deletion_only_on_the_versions_it_was_checked_against() -> None:
    assert bulk_delete_checked("1.13.27")
    assert not bulk_delete_checked("1.14.0") and not bulk_delete_checked("2.0.0")
