"""What `up` and `iot-etl backfill` say while they wait, from the states they read (pure: no service)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from iot_etl.backfill import BackfillState, run_waits
from iot_etl.window_report import WindowDone

END = datetime(2026, 12, 7, 12, 1, tzinfo=UTC)


def test_a_windows_lag_is_the_age_of_its_oldest_message_when_it_became_queryable() -> None:
    # one run that took five windows at once: its first message waited five minutes, not 16.9 s
    merged = WindowDone(
        1,
        END - timedelta(minutes=5),
        END,
        100,
        100,
        0,
        0,
        END + timedelta(seconds=16.9),
        oldest_arrival=END - timedelta(minutes=5) + timedelta(seconds=0.4),
    )
    assert merged.line(END).endswith("lag 316.5 s")
    # a window without messages (no oldest arrival): measured from its end
    empty = WindowDone(2, END - timedelta(minutes=1), END, 0, 0, 0, 0, END + timedelta(seconds=2))
    assert empty.line(END).endswith("lag 2.0 s")
    # a backfill's batch says so: the range it re-processed, and how old its oldest message was
    backfill = WindowDone(
        3,
        END - timedelta(minutes=10),
        END,
        5,
        5,
        0,
        0,
        END + timedelta(minutes=3),
        oldest_arrival=END - timedelta(minutes=10),
        backfill="lmlcfyoo",
    )
    assert backfill.line(END).startswith("backfill lmlcfyoo 11:51:00-12:01:00  messages 5")
    assert backfill.line(END).endswith("lag 780.0 s")
    # a shard's run (each shard's windows have runs of their own) names its shard
    shard = WindowDone(4, END - timedelta(minutes=1), END, 7, 7, 0, 0, END + timedelta(seconds=3), shard=2)
    assert shard.line(END).startswith("window 12:00:00-12:01:00 shard 2  messages 7")
    assert " shard " not in empty.line(END)


def test_a_backfill_whose_assets_are_done_says_which_runs_and_steps_it_waits_for() -> None:
    running = {
        "id": "5d41c0a2-aaaa-bbbb-cccc-000000000000",
        "status": "STARTED",
        "stepStats": [
            {"stepKey": "telemetry", "status": "SUCCESS"},
            {"stepKey": "telemetry_plausibility", "status": "IN_PROGRESS"},
        ],
    }
    queued = {"id": "7e0f1b33-aaaa", "status": "QUEUED", "stepStats": []}
    waits = (run_waits(running), run_waits(queued))
    assert waits == ("run 5d41c0a2 (telemetry_plausibility)", "run 7e0f1b33 (queued)")
    done = BackfillState("bf", "REQUESTED", targeted=6, done=6, failed=0, in_progress=0, waiting=waits)
    assert done.waiting_for() == "waiting for run 5d41c0a2 (telemetry_plausibility), run 7e0f1b33 (queued)"
    assert done.line().endswith(
        "6/6 hour-assets materialized, 0 in progress, 0 failed; " + done.waiting_for()
    )
    # before its assets are done, and once it has ended, it waits for nothing
    assert BackfillState("bf", "REQUESTED", 6, 3, 0, 1, waiting=waits).waiting_for() == ""
    assert BackfillState("bf", "COMPLETED_SUCCESS", 6, 6, 0, 0).waiting_for() == ""
    # assets done and no run left unfinished: Dagster has yet to mark the backfill finished
    assert (
        BackfillState("bf", "REQUESTED", 6, 6, 0, 0).waiting_for()
        == "waiting for Dagster to mark it finished"
    )
