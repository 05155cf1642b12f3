"""The hour's checks run with a live run at most every IOT_CHECKS_EVERY_S and always with the run that
closes an hour; the other runs only store, so the UI's Checks tab shows the last results, not "In
Progress", for all but the few seconds a run with checks is in flight."""

from __future__ import annotations

import json

import pytest
from dagster import AssetKey, DagsterInstance

from dagster_project.defs.ingest.sensors import plan_checks, run_request
from dagster_project.defs.resources import resources_from_settings
from dagster_project.lib.windows import HOUR_MS, Window
from iot_core.settings import Settings
from tests.support.hours import ClosedHour, check_results
from tests.support.pipeline import execute_request

HOUR = 1_796_083_200_000  # 2026-12-01 00:00 UTC
MIN = 60_000


def window(n: int) -> Window:
    return Window(HOUR + n * MIN, HOUR + (n + 1) * MIN)


def test_a_run_checks_its_hour_at_most_every_interval_and_always_when_it_closes_the_hour() -> None:
    every = 5 * MIN
    # the first run after a while checks; the next ones within five minutes only store
    plan, checked = plan_checks([window(10)], HOUR + 11 * MIN, 0, every)
    assert plan == [True] and checked == HOUR + 11 * MIN
    for n in range(11, 15):
        plan, checked = plan_checks([window(n)], HOUR + (n + 1) * MIN, checked, every)
        assert plan == [False], n
    plan, checked = plan_checks([window(15)], HOUR + 16 * MIN, checked, every)
    assert plan == [True]
    # the window that closes the hour checks however recently another did
    plan, _ = plan_checks([window(58), window(59)], HOUR + 60 * MIN, checked + 1, every)
    assert plan == [False, True] and window(59).end_ms == HOUR + HOUR_MS
    # 0: every run checks
    assert plan_checks([window(1), window(2)], HOUR + 3 * MIN, HOUR + 3 * MIN, 0)[0] == [True, True]


@pytest.mark.services
def test_a_run_without_checks_stores_its_window_and_evaluates_no_check(
    clean_db: str, settings: Settings
) -> None:
    hour = ClosedHour(settings, hours_back=2)
    hour.add(5, "devices/cadence-1/temperature", json.dumps({"value": 20.5}))
    first = Window(hour.start_ms, hour.start_ms + settings.window_ms)
    resources = resources_from_settings(settings)
    with DagsterInstance.ephemeral() as instance:
        lean = execute_request(run_request(first, checks=False), instance, resources)
        assert check_results(lean) == {}
        stored = {e.asset_key for e in lean.get_asset_materialization_events()}
        assert stored == {AssetKey("raw_messages"), AssetKey("telemetry"), AssetKey("hourly_rollups")}
        checked = execute_request(run_request(first), instance, resources)
        assert set(check_results(checked)) >= {"reconciliation", "plausibility", "archive_complete"}
