"""Per-device limits in the listener, against a private Mosquitto and the shared Redis: a flooding device
gets its burst (plus what refilled) written and the rest acknowledged, counted and logged; the broker
redelivers none of it; a well-behaved device in the same burst loses nothing; topics longer than 1,024
bytes and payloads over the bytes rate are not written either; `status` shows the count."""

from __future__ import annotations

import logging
import re
import time

import pytest

from ingest_listener import Listener
from ingest_listener.device_limits import BYTES, RATE, REASONS, TOPIC_TOO_LONG
from iot_core.settings import Settings
from iot_etl.status import listener_limited
from tests.support import PrivateMosquitto, free_port
from tests.support.listener import count, entries, make_settings, started
from tests.support.waiting import wait_until

pytestmark = pytest.mark.services

FLOOD, CALM = "devices/flood/seq", "devices/calm/seq"


def received(listener: Listener) -> int:
    return int(sum(listener.metrics.value("iot_listener_messages_received_total", {"qos": q}) for q in "012"))


def limited(listener: Listener, reason: str) -> int:
    return int(listener.metrics.value("iot_listener_messages_limited_total", {"reason": reason}))


def settled(listener: Listener, n: int) -> bool:
    """All n messages received, and everything received either limited or written."""
    done = sum(limited(listener, r) for r in REASONS) + listener.metrics.value(
        "iot_listener_entries_written_total"
    )
    return received(listener) == n and done == n and listener.writer.unwritten == 0


def assert_nothing_redelivered(broker: PrivateMosquitto, settings: Settings) -> None:
    """A new listener on the same session gets only a marker published after it connected: the broker
    delivers what a session holds before anything newer, so nothing was left unacknowledged."""
    again = make_settings(
        broker, settings.stream_prefix + ":again", listener_client_id=settings.listener_client_id
    )
    listener = started(again)
    try:
        broker.publish_many([("devices/marker/seq", b"marker")], qos=1)
        assert wait_until(lambda: count(again) >= 1, 15)
        assert wait_until(lambda: listener.writer.unwritten == 0, 5)
        assert received(listener) == 1
        assert [row[b"payload"] for row in entries(again)] == [b"marker"]
    finally:
        assert listener.stop() == 0


def logged_counts(caplog: pytest.LogCaptureFixture, device: str) -> int:
    """The limited messages of `device` that the listener's log lines report."""
    pattern = re.compile(rf"device {device} over its limit: (\d+) messages not written in the last minute \(")
    return sum(int(m.group(1)) for r in caplog.records if (m := pattern.match(r.getMessage())))


def test_a_flooding_device_is_limited_acknowledged_and_never_redelivered(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    rate, burst, flood, calm = 10, 100, 3000, 50
    messages = [(FLOOD, str(i).encode()) for i in range(flood)]
    for i in range(calm):  # the well-behaved device's messages spread through the flood
        messages.insert(i * (flood // calm), (CALM, str(i).encode()))
    caplog.set_level(logging.INFO, logger="ingest_listener")
    with PrivateMosquitto() as broker:
        settings = make_settings(
            broker, prefix, device_max_msgs_per_s=rate, listener_metrics_port=free_port()
        )
        listener = started(settings)
        try:
            t0 = time.monotonic()
            broker.publish_many(messages, qos=1)
            assert wait_until(lambda: settled(listener, flood + calm), 30)
            elapsed = time.monotonic() - t0
            rows = entries(settings)
            by_topic = {
                t: [int(r[b"payload"]) for r in rows if r[b"topic"] == t.encode()] for t in (FLOOD, CALM)
            }
            assert by_topic[CALM] == list(range(calm))  # the well-behaved device lost nothing
            written = len(by_topic[FLOOD])
            assert burst <= written <= burst + rate * elapsed + 1, (written, elapsed)
            assert by_topic[FLOOD][:burst] == list(range(burst))  # a fresh bucket: the burst goes first
            assert limited(listener, RATE) == flood - written
            assert limited(listener, BYTES) == limited(listener, TOPIC_TOO_LONG) == 0
            # every QoS 1 message was acknowledged: the written ones after their XADD, the others at once
            assert listener.metrics.value("iot_listener_acks_sent_total") == calm + written
            line = listener_limited(settings)
            assert line.value == f"{flood - written} since it started (rate {flood - written})"
        finally:
            assert listener.stop() == 0
        assert logged_counts(caplog, "flood") == flood - written
        assert logged_counts(caplog, "calm") == 0
        assert_nothing_redelivered(broker, settings)


def test_long_topics_and_heavy_payloads_are_not_written_nor_redelivered(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    at_limit = "devices/" + "a" * (1024 - len("devices/") - len("/t")) + "/t"
    too_long = "devices/" + "b" * (1025 - len("devices/") - len("/t")) + "/t"
    huge = "devices/c/" + "x" * 60_000  # Mosquitto accepts topics up to 65,535 bytes
    assert (len(at_limit), len(too_long)) == (1024, 1025)
    caplog.set_level(logging.INFO, logger="ingest_listener")
    with PrivateMosquitto() as broker:
        # 1,000 B/s: a burst of 10,000 bytes, so 2 of 5 payloads of 4,000 bytes fit, plus what refills
        settings = make_settings(broker, prefix, listener_qos=2, device_max_bytes_per_s=1000)
        listener = started(settings)
        try:
            t0 = time.monotonic()
            for qos in (0, 1, 2):
                broker.publish_many([(at_limit, b"fits"), (too_long, b"long"), (huge, b"huge")], qos=qos)
            broker.publish_many([("devices/heavy/seq", bytes(4000)) for _ in range(5)], qos=2)
            assert wait_until(lambda: settled(listener, 3 * 3 + 5), 15)
            elapsed = time.monotonic() - t0
            rows = entries(settings)
            assert (
                sorted(r[b"topic"] for r in rows if r[b"payload"] != bytes(4000)) == [at_limit.encode()] * 3
            )
            heavy = sum(r[b"topic"] == b"devices/heavy/seq" for r in rows)
            assert 2 <= heavy <= 2 + int(1000 * elapsed / 4000) + 1, (heavy, elapsed)
            assert limited(listener, TOPIC_TOO_LONG) == 6
            assert limited(listener, BYTES) == 5 - heavy
            assert limited(listener, RATE) == 0
        finally:
            assert listener.stop() == 0
        assert logged_counts(caplog, "b" * 64) == logged_counts(caplog, "c") == 3  # keys: 64 characters
        assert logged_counts(caplog, "heavy") == 5 - heavy
        assert any("IOT_DEVICE_MAX_BYTES_PER_S=1000)" in r.getMessage() for r in caplog.records)
        assert_nothing_redelivered(broker, settings)


def test_status_says_when_it_cannot_read_the_listeners_count() -> None:
    port = free_port()
    line = listener_limited(Settings(listener_metrics_port=port, listener_metrics_host="0.0.0.0"))
    assert (line.part, line.item) == ("listener", "messages limited")
    assert line.value.startswith(f"unknown (no listener metrics at http://127.0.0.1:{port}/metrics: ")
    off = listener_limited(Settings(listener_metrics_port=0))
    assert off.value == "unknown (the listener's metrics are off: IOT_LISTENER_METRICS_PORT=0)"
