"""bench.runs_ui's parts: the UI's query documents it sends, and the runs it synthesises."""

from __future__ import annotations

import random
import re

from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from bench.runs_ui.synth import plan_run, windows, write_runs
from bench.runs_ui.ui_queries import ui_query
from bench.runs_ui.webserver import QUERIES
from dagster_project.lib.windows import HOUR_MS


def test_every_timed_query_is_a_whole_document_of_the_installed_ui() -> None:
    for query in QUERIES:
        document = ui_query(query.name)
        defined = set(re.findall(r"fragment (\w+) on", document))
        spread = set(re.findall(r"\.\.\.\s*(\w+)", document)) - {"on"}
        assert f"query {query.name}" in document
        assert spread <= defined, f"{query.name}: fragments missing: {spread - defined}"


def test_synthesised_runs_look_like_the_sensors_and_materialize_their_hour() -> None:
    first_ms = 1_790_000_000_000 // HOUR_MS * HOUR_MS
    planned = [plan_run(w) for w in windows(first_ms, 3, 60_000)]
    with DagsterInstance.ephemeral() as instance:
        write_runs(instance, planned, random.Random(1), checks=True)
        records = instance.get_run_records()
        assert len(records) == 3
        for record in records:
            run = record.dagster_run
            assert run.job_name == "micro_batch_job" and run.status == DagsterRunStatus.SUCCESS
            assert (
                run.tags["iot/kind"] == "micro"
                and run.tags["dagster/partition"] == planned[0].window.partition_key
            )
            assert record.end_time is not None and record.start_time is not None
            assert (
                record.end_time > record.start_time
                and record.create_timestamp.timestamp() < record.start_time
            )
        for asset in ("raw_messages", "telemetry"):
            assert instance.get_materialized_partitions(AssetKey(asset)) == {planned[0].window.partition_key}
