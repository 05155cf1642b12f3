"""A message the broker sent again (MQTT DUP, after a broker restart or a listener reconnect) whose first
copy is archived is stored once: a plain reading without a device time takes its arrival time, so its copy
would otherwise be a second row. Real stream entries landed and decoded on the local services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from dagster_project.lib.batch import decode_window, land_window, window_batch
from dagster_project.lib.raw_entries import raw_row
from dagster_project.lib.windows import Window
from iot_core.formats.batch import DecodeOptions

pytestmark = pytest.mark.services
START = datetime(2026, 11, 30, 10, tzinfo=UTC)
START_MS = int(START.timestamp() * 1000)


def entry(seq: int, at_s: float, topic: str, payload: bytes, *, dup: bool = False) -> tuple:
    fields = {b"topic": topic.encode(), b"payload": payload, b"qos": b"1", b"retain": b"0"}
    if dup:
        fields[b"dup"] = b"1"
    return raw_row("iot:raw", f"{START_MS + int(at_s * 1000)}-{seq}", fields)


def test_a_redelivered_copy_is_a_duplicate_and_a_device_sending_twice_is_not(clean_db: str) -> None:
    rows = [
        entry(0, 1.0, "devices/redeliver-1/temperature", b"21.5"),
        entry(0, 4.0, "devices/redeliver-1/temperature", b"21.5", dup=True),  # the broker sent it again
        entry(0, 2.0, "devices/twice-1/temperature", b"19.0"),
        entry(0, 3.0, "devices/twice-1/temperature", b"19.0"),  # the device sent the same reading again
        entry(0, 5.0, "devices/first-1/temperature", b"7.0", dup=True),  # its first copy never came
        entry(1, 5.0, "devices/late-1/temperature", b"3.0"),
    ]
    late_copy = entry(0, 20 * 60.0, "devices/late-1/temperature", b"3.0", dup=True)  # past the horizon
    window = Window(START_MS, START_MS + 3_600_000)
    info = window_batch("redeliveries", window.partition_key, window, ["iot:raw"])
    with psycopg.connect(clean_db) as conn:
        land_window(conn, info, [sorted([*rows, late_copy], key=lambda r: (r[2], r[3]))])
        conn.commit()
        decoded = decode_window(
            conn, info, window, DecodeOptions(), None, redelivery_horizon=timedelta(minutes=15)
        )
        conn.commit()
        stored = conn.execute(
            """SELECT d.device_key, count(*) FROM measurements m JOIN devices d USING (device_id)
               GROUP BY 1 ORDER BY 1"""
        ).fetchall()
        copies = conn.execute(
            "SELECT r.raw_id, r.reason, r.detail FROM rejected r WHERE stage = 'duplicate'"
        ).fetchall()
        (first,) = conn.execute(
            "SELECT raw_id FROM raw_messages WHERE topic = %s AND NOT redelivered",
            ("devices/redeliver-1/temperature",),
        ).fetchone()
    assert stored == [("first-1", 1), ("late-1", 2), ("redeliver-1", 1), ("twice-1", 2)]
    assert [(reason, detail) for _, reason, detail in copies] == [
        ("duplicate_redelivery", f"the broker sent raw message {first} again")
    ]
    assert decoded.duplicates == 1 and decoded.raw == 7
