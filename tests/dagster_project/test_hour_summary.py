"""The run that closes an hour reports the hour's totals from counts the hour's earlier micro-batch runs kept,
reading only its own range; totals that a later batch of the hour could have changed are read again. Through
the real job, window by window, checked against the totals counted from the tables in one go."""

from __future__ import annotations

import json
from itertools import pairwise

import psycopg
import pytest
from dagster import AssetKey, DagsterInstance

from dagster_project.lib.hour_summaries import hour_summary
from dagster_project.lib.windows import Window
from iot_core.settings import Settings
from iot_core.streams import utc_from_ms
from tests.support.hours import ClosedHour, run_micro
from tests.support.reference import REFERENCE_004_EVENT

pytestmark = pytest.mark.services
SUMMED = ("raw_messages", "measurements", "events", "rejected", "duplicates")


def telemetry_metadata(settings: Settings, instance: DagsterInstance, window: Window) -> dict[str, object]:
    """`window`'s micro-batch run: its telemetry materialization's metadata."""
    result = run_micro(settings, instance, window)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("telemetry")
    assert materialization.asset_key == AssetKey("telemetry")
    return {name: value.value for name, value in materialization.metadata.items()}


def test_the_hour_closing_run_counts_only_its_range_and_reports_the_whole_hours_totals(
    clean_db: str, settings: Settings
) -> None:
    hour = ClosedHour(settings, hours_back=2)
    cuts = [hour.start_ms, hour.start_ms + 600_000, hour.start_ms + 1_200_000, hour.window.end_ms]
    windows = [Window(a, b) for a, b in pairwise(cuts)]
    for n, window in enumerate(windows):
        offset_s = (window.start_ms - hour.start_ms) / 1000
        for k in range(4):
            hour.add(offset_s + 1 + k, f"devices/hs-{n}/temperature", json.dumps({"value": 20 + k}))
        hour.add(offset_s + 10, f"devices/hs-{n}/humidity", b"\xff\xfe")  # not UTF-8
        hour.add(offset_s + 11, "nowhere/x", "1")  # unknown topic
        if n:  # an event in the middle range, redelivered twice in the closing one
            hour.add(offset_s + 100, "qs/v1/esp32-01/events", REFERENCE_004_EVENT)
    hour.add(3599, "qs/v1/esp32-01/events", REFERENCE_004_EVENT)

    with DagsterInstance.ephemeral() as instance:
        first = telemetry_metadata(settings, instance, windows[0])
        assert "summary_of_hour" not in first  # an open part of the hour reports its run only
        assert first["hour_counts_read_from"] == utc_from_ms(hour.start_ms).isoformat()
        telemetry_metadata(settings, instance, windows[1])
        closing = telemetry_metadata(settings, instance, windows[2])
        assert closing["hour_counts_read_from"] == utc_from_ms(windows[2].start_ms).isoformat()

        with psycopg.connect(clean_db) as conn:
            counted = hour_summary(conn, *hour.window.utc_bounds)
        assert {name: closing[name] for name in SUMMED} == {name: counted[name] for name in SUMMED}
        assert (closing["raw_messages"], closing["measurements"], closing["events"]) == (21, 12, 1)
        assert (closing["rejected"], closing["duplicates"]) == (6, 2)
        assert closing["rejected_not_utf8"] == 3 and closing["rejected_unknown_topic"] == 3
        assert closing["run_raw_messages"] == 8 and closing["batches"] == 3
        assert closing["summary_of_hour"] is True

        # the first range decoded again: a batch overlapping every kept count of the hour, so its own run
        # counts from the hour's start, and the closing range's run reads on from what that run kept
        redo = telemetry_metadata(settings, instance, windows[0])
        assert redo["hour_counts_read_from"] == utc_from_ms(hour.start_ms).isoformat()
        again = telemetry_metadata(settings, instance, windows[2])
        assert again["hour_counts_read_from"] == utc_from_ms(windows[0].end_ms).isoformat()
        assert {name: again[name] for name in SUMMED} == {name: counted[name] for name in SUMMED}
