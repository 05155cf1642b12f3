"""What a user of `iot-etl up` reads: after the component lines and the UI address, one line per processed
window (counts and lag) and one per failed run (what failed, what happens next, where to look), while
Dagster's own INFO chatter (sensor ticks, daemon heartbeats) goes to the log files whose folder `up` names.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from iot_etl.child_output import Condenser, Quiet
from iot_etl.launch import launch_up
from tests.support.mosquitto import PrivateMosquitto
from tests.support.redis_server import PrivateRedis
from tests.support.up import WINDOW_S, publish, stop_up, stored_event
from tests.support.waiting import wait_until

WINDOW_LINE = re.compile(
    r"^window (?P<start>\d\d:\d\d:\d\d)-(?P<end>\d\d:\d\d:\d\d)  messages (?P<messages>\d+)  "
    r"stored (?P<stored>\d+)  rejected (?P<rejected>\d+)  lag (?P<lag>\d+\.\d) s$"
)
SENSOR_TICK = "Checking for new runs for sensor: micro_window_sensor"


class Output:
    """`up`'s lines after the UI address, as they come."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: re.Pattern[str] | str, timeout_s: float, start: int = 0) -> re.Match[str]:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern

        def first_match() -> re.Match[str] | None:
            return next((m for line in self.lines[start:] if (m := regex.search(line))), None)

        if match := wait_until(first_match, timeout_s, interval_s=0.2):
            return match
        raise AssertionError(
            f"no line like {regex.pattern!r} within {timeout_s} s:\n" + "\n".join(self.lines)
        )


def publish_in_one_window(port: int, messages: list[tuple[str, str]]) -> datetime:
    """Publish away from a window's end so that all land in one window; returns when."""
    wait_until(lambda: time.time() % WINDOW_S <= WINDOW_S - 3, WINDOW_S, interval_s=0.1)
    sent = datetime.now(UTC)
    publish(port, messages)
    return sent


def within(match: re.Match[str], when: datetime) -> bool:
    start, end = (datetime.strptime(match[k], "%H:%M:%S").time() for k in ("start", "end"))
    return start <= when.time() < end or (end < start and (when.time() >= start or when.time() < end))


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("mosquitto") is None or shutil.which("redis-server") is None,
    reason="needs mosquitto and redis-server for a private broker and Redis",
)
def test_up_prints_a_line_per_window_and_per_failed_run_and_no_dagster_chatter(
    up_env: dict[str, str],
) -> None:
    with PrivateMosquitto() as broker, PrivateRedis() as redis_server:
        env = {**up_env, **broker.env(), **redis_server.env()}
        out = Output()
        up, banner = launch_up(env, "--no-simulator", timeout_s=300, on_line=out.add)
        url = env["IOT_DATABASE_URL"]
        moved = False
        try:
            logs = Path(env["IOT_DAGSTER_HOME"]).parent / "logs"
            children = "code-server, listener, dagster-daemon, dagster-webserver"
            named = rf"^logs of {children} .*: {re.escape(str(logs))}/$"
            assert re.search(named, banner, re.M), banner

            device = f"out{uuid.uuid4().hex[:6]}"
            stranger = {
                "schema": 1,
                "event_id": f"{device}-2",
                "device_id": "someone-else",
                "event_type": "x",
            }
            sent = publish_in_one_window(
                broker.port,
                [
                    (f"devices/{device}/temperature", "21.5"),
                    (f"qs/v1/{device}/events", json.dumps(stored_event(device))),
                    (f"qs/v1/{device}/events", json.dumps(stranger)),
                ],
            )
            line = out.wait_for(WINDOW_LINE, WINDOW_S + 120)
            assert (line["messages"], line["stored"], line["rejected"]) == ("3", "2", "1"), line.string
            assert within(line, sent), (line.string, sent)
            assert 0 < float(line["lag"]) < 120

            # a run that fails: the table its telemetry step writes is away
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ALTER TABLE measurements RENAME TO measurements_away")
            moved = True
            shown = len(out.lines)
            publish_in_one_window(broker.port, [(f"devices/{device}/temperature", "22.5")])
            failed = out.wait_for(r"^window \S+  FAILED in run \w{8}: (.*)$", WINDOW_S + 120, shown)
            # whichever step that reads or writes the table failed first: telemetry, its reconciliation check,
            # hourly_rollups
            cause = 'psycopg.errors.UndefinedTable: relation "measurements" does not exist'
            assert re.match(rf"step \w+: {re.escape(cause)}; ", failed[1]), failed.string
            assert "Dagster retries it (1 of 3)" in failed[1], failed.string
            assert f"http://127.0.0.1:{env['IOT_WEBSERVER_PORT']}/runs/" in failed[1]
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ALTER TABLE measurements_away RENAME TO measurements")
            moved = False
            healed = out.wait_for(r"^window \S+  messages 1  stored 1  rejected 0  lag", 180, shown)
            assert healed
        finally:
            if moved:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("ALTER TABLE measurements_away RENAME TO measurements")
            code = stop_up(up)
    assert code == 0
    everything = banner + "\n".join(out.lines)
    assert SENSOR_TICK not in everything
    assert " - INFO - " not in everything and '"level": "info"' not in everything
    # the chatter was there, in the daemon's log
    assert SENSOR_TICK in (logs / "dagster-daemon.log").read_text(errors="replace")


def test_only_warnings_and_errors_of_a_process_are_shown_in_one_line_each() -> None:
    condenser = Condenser("dagster-daemon")
    lines = [
        "\x1b[32m2026-11-29 19:16:36 +0000\x1b[0m - dagster.daemon.SensorDaemon - \x1b[34mINFO\x1b[0m - "
        + SENSOR_TICK,
        "2026-11-29 19:16:36 +0000 - dagster.daemon.EventLogConsumerDaemon - WARNING - No cursor for "
        "event type DagsterEventType.RUN_FAILURE, ignoring older events",
        "\x1b[32m2026-11-29 21:02:54 +0000\x1b[0m - dagster.code_server - \x1b[34mWARNING\x1b[0m - "
        "No heartbeat received in 20 seconds, shutting down",
        "2026-11-29 19:16:40 +0000 - dagster.daemon.SensorDaemon - ERROR - Sensor micro_window_sensor failed",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "    raise RuntimeError('boom')",
        "RuntimeError: boom",
        "/venv/lib/dagster/x.py:12: UserWarning: something odd",
        "  warnings.warn('something odd')",
        '{"event": "broker away", "level": "warning", "logger": "ingest_listener.listener"}',
        '{"event": "connected", "level": "info", "logger": "ingest_listener.listener"}',
    ]
    shown = [text for text in map(condenser.feed, lines) if text is not None]
    assert shown == [
        "dagster-daemon: error: Sensor micro_window_sensor failed",
        "dagster-daemon: error: RuntimeError: boom (traceback in its log)",
        "dagster-daemon: warning: UserWarning: something odd",
        "dagster-daemon: warning: broker away",
    ]


def test_a_line_repeated_within_minutes_is_shown_once_then_counted() -> None:
    shown: list[str] = []
    clock = [0.0]
    quiet = Quiet(shown.append, now=lambda: clock[0])
    for _ in range(3):
        quiet("daemon: error: boom")
    clock[0] = 400.0
    quiet("daemon: error: boom")
    quiet("daemon: error: other")
    assert shown == [
        "daemon: error: boom",
        "daemon: error: boom (and 2 more like it)",
        "daemon: error: other",
    ]
