"""Reconciliation in micro-batch runs reads only what follows its last passing verdict of the hour, and
that verdict is void once any batch overlapping it has been written again: through the real job, window by
window, with a window whose decoding is missing in the middle, one decoded again, and a backfill of the
hour still writing while live windows run."""

from __future__ import annotations

import json
from datetime import datetime

import psycopg
import pytest
from dagster import DagsterInstance, RunRequest, materialize

from dagster_project.defs.ingest.assets import build_ingest_assets
from dagster_project.defs.ingest.sensors import run_request
from dagster_project.defs.partitions import build_hourly_partitions, partitions_start
from dagster_project.defs.resources import resources_from_settings
from dagster_project.lib.batch import window_batch
from dagster_project.lib.storage.batches import open_batch
from dagster_project.lib.windows import Window
from iot_core.settings import Settings
from iot_core.streams import utc_from_ms
from tests.support.hours import ClosedHour, check_results, run_micro
from tests.support.pipeline import execute_request

pytestmark = pytest.mark.services
WINDOW_MS = 10_000


def run_window(settings: Settings, instance: DagsterInstance, window: Window) -> dict:
    """`window`'s micro-batch run: its checks' evaluations (a failing reconciliation fails the run: it is
    a blocking check)."""
    return check_results(run_micro(settings, instance, window, raise_on_error=False))


def archive_only(settings: Settings, instance: DagsterInstance, window: Window) -> None:
    """`window` archived by its `raw_messages` step alone: a run whose telemetry step failed."""
    request = run_request(window)
    result = materialize(
        build_ingest_assets(build_hourly_partitions(partitions_start(settings)))[:1],  # raw_messages
        run_config=request.run_config,
        partition_key=request.partition_key,
        instance=instance,
        tags=request.tags,
        resources=resources_from_settings(settings),
    )
    assert result.success


def read_from(evaluation: object) -> datetime:
    return datetime.fromisoformat(evaluation.metadata["read_from"].value)  # type: ignore[attr-defined]


def test_reconciliation_reads_on_from_its_last_verdict_until_a_batch_voids_it(
    clean_db: str, settings: Settings
) -> None:
    hour = ClosedHour(settings, hours_back=2)
    windows = [Window(hour.start_ms + n * WINDOW_MS, hour.start_ms + (n + 1) * WINDOW_MS) for n in range(4)]
    for n, window in enumerate(windows):
        for k in range(3):
            at_s = (window.start_ms - hour.start_ms) / 1000 + 1 + k
            hour.add(at_s, f"devices/vd-{n}/temperature", json.dumps({"value": n * 10 + k}))

    with DagsterInstance.ephemeral() as instance:
        first = run_window(settings, instance, windows[0])["reconciliation"]
        assert first.passed and read_from(first) == utc_from_ms(hour.start_ms)

        # the second window is archived but its decoding never ran (a failed telemetry step)
        archive_only(settings, instance, windows[1])
        third = run_window(settings, instance, windows[2])["reconciliation"]
        assert not third.passed
        assert read_from(third) == utc_from_ms(windows[0].end_ms)  # the first window's verdict holds
        assert third.metadata["unaccounted"].value == 3
        assert third.metadata["raw"].value == 9

        # no verdict was kept for the failing range: it is read again, and fails again
        fourth = run_window(settings, instance, windows[3])["reconciliation"]
        assert not fourth.passed and read_from(fourth) == utc_from_ms(windows[0].end_ms)

        # the missing window decoded: its run passes, reading on from the first window's verdict
        healed = run_window(settings, instance, windows[1])["reconciliation"]
        assert healed.passed and read_from(healed) == utc_from_ms(windows[0].end_ms)
        assert healed.metadata["raw"].value == 6

        # the first window decoded again: a batch overlapping every kept verdict, so all are void and
        # its own check reads the hour from its start; the next run reads on from that check's verdict
        redo = run_window(settings, instance, windows[0])["reconciliation"]
        assert redo.passed and read_from(redo) == utc_from_ms(hour.start_ms)
        results = run_window(settings, instance, windows[3])
        again = results["reconciliation"]
        assert again.passed and read_from(again) == utc_from_ms(windows[0].end_ms)
        assert again.metadata["raw"].value == 12
        assert again.metadata["fact_rows"].value == 12
        # the quality checks read on the same way, and add up to the hour so far
        for name in ("schema_pass_rate", "plausibility", "duplicates"):
            assert read_from(results[name]) == utc_from_ms(windows[0].end_ms), name
        assert results["schema_pass_rate"].metadata["raw"].value == 12
        assert results["duplicates"].metadata["raw"].value == 12
        assert results["plausibility"].metadata["readings_with_range"].value == 12

    with psycopg.connect(clean_db) as conn:
        kept = conn.execute(
            """SELECT range_start, range_end, coalesce(totals->>'raw', '12') FROM check_verdicts
               ORDER BY range_end"""
        ).fetchall()
    # one per check, and the hour's counts (`test_hour_summary`): the shorter ones of the hour dropped
    assert kept == [(utc_from_ms(hour.start_ms), utc_from_ms(windows[3].end_ms), "12")] * 5


def test_live_runs_read_on_while_a_backfill_rewrites_their_hour_which_its_own_checks_judge_whole(
    clean_db: str, settings: Settings
) -> None:
    """A backfill of the open hour writes it page by page for minutes. Meanwhile the live runs' checks read
    only their own window, on from the verdict the backfill voided, saying so, and keep nothing; the
    backfill's checks judge the hour whole, once, and keep their verdict, from which live runs read on."""
    hour = ClosedHour(settings, hours_back=2)
    windows = [Window(hour.start_ms + n * WINDOW_MS, hour.start_ms + (n + 1) * WINDOW_MS) for n in range(5)]
    for n, window in enumerate(windows):
        at_s = (window.start_ms - hour.start_ms) / 1000 + 1
        hour.add(at_s, f"devices/bf-{n}/temperature", json.dumps({"value": n}))
    checks = ("reconciliation", "schema_pass_rate", "plausibility", "duplicates")

    with DagsterInstance.ephemeral() as instance:
        for window in windows[:2]:
            assert run_window(settings, instance, window)["reconciliation"].passed
        # a page of the backfill committed: its batch covers the hour so far
        so_far = Window(hour.start_ms, windows[3].end_ms)
        with psycopg.connect(clean_db) as backfill:
            open_batch(backfill, window_batch("bf-run", so_far.partition_key, so_far, [], "bf-1"))
        during = run_window(settings, instance, windows[2])
        for name in checks:
            assert during[name].passed, name
            assert read_from(during[name]) == utc_from_ms(windows[1].end_ms), name
            assert during[name].metadata["judged_before_backfill"].value == "bf-1", name
        # the backfill's own run: its checks read the hour whole and keep their verdict
        request = run_request(so_far)
        own = check_results(
            execute_request(
                RunRequest(
                    run_key="bf",
                    partition_key=request.partition_key,
                    run_config=request.run_config,
                    tags={**request.tags, "dagster/backfill": "bf-1"},
                ),
                instance,
                resources_from_settings(settings),
            )
        )
        for name in checks:
            assert own[name].passed and read_from(own[name]) == utc_from_ms(hour.start_ms), name
            assert "judged_before_backfill" not in own[name].metadata, name
        after = run_window(settings, instance, windows[4])
        for name in checks:
            assert read_from(after[name]) == utc_from_ms(windows[3].end_ms), name
            assert "judged_before_backfill" not in after[name].metadata, name
        assert after["reconciliation"].passed and after["reconciliation"].metadata["raw"].value == 5
