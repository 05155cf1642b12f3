"""Per-device token buckets and the once-a-minute report of the listener, without I/O: rate, burst, refill,
bytes, bounded memory, device keys of all three topic formats, and the log lines."""

from __future__ import annotations

import pytest

from ingest_listener.device_limits import (
    BYTES,
    MAX_DEVICE_KEY,
    NO_DEVICE,
    RATE,
    TOPIC_TOO_LONG,
    DeviceLimiter,
    LimitLog,
    device_key,
    device_label,
)

LIMITS = {
    RATE: "IOT_DEVICE_MAX_MSGS_PER_S=100",
    BYTES: "IOT_DEVICE_MAX_BYTES_PER_S=1048576",
    TOPIC_TOO_LONG: "topic longer than 1024 bytes",
}


def passed(limiter: DeviceLimiter, device: str, n: int, now: float, size: int = 10) -> int:
    """How many of n messages sent at `now` fit."""
    return sum(limiter.check(device, size, now) is None for _ in range(n))


# --- buckets -------------------------------------------------------------------------------------
def test_a_fresh_device_gets_exactly_its_burst_then_the_rate_refuses() -> None:
    limiter = DeviceLimiter(100, 0)
    assert passed(limiter, "d1", 1000, now=5.0) == 1000  # burst: 10x the per-second rate
    assert limiter.check("d1", 10, 5.0) == RATE
    assert limiter.check("d2", 10, 5.0) is None  # another device has its own bucket


def test_the_bucket_refills_at_the_rate_and_never_beyond_the_burst() -> None:
    limiter = DeviceLimiter(10, 0)
    assert passed(limiter, "d", 500, now=0.0) == 100
    assert passed(limiter, "d", 50, now=0.5) == 5  # half a second: five messages
    assert passed(limiter, "d", 50, now=0.5) == 0
    assert passed(limiter, "d", 500, now=1000.0) == 100  # long idle: a full bucket, not more


def test_refused_messages_take_nothing_from_the_bucket() -> None:
    limiter = DeviceLimiter(10, 1000)
    assert passed(limiter, "d", 100, now=0.0) == 100
    for _ in range(10_000):
        assert limiter.check("d", 1, 0.05) == RATE
    assert limiter.check("d", 1, 0.1) is None  # one refill of 0.1 s is still there for one message


def test_the_bytes_rate_limits_on_its_own_and_says_so() -> None:
    limiter = DeviceLimiter(0, 1000)  # 1000 B/s: a burst of 10,000 bytes, no message limit
    assert passed(limiter, "d", 20, now=0.0, size=1000) == 10
    assert limiter.check("d", 1000, 0.0) == BYTES
    assert limiter.check("d", 0, 0.0) is None  # an empty payload costs no bytes
    assert passed(limiter, "d", 20, now=2.0, size=500) == 4  # 2 s refill: 2,000 bytes
    assert limiter.check("big", 10_001, 100.0) == BYTES  # larger than the burst: never fits


def test_a_message_refused_for_its_bytes_takes_no_message_token() -> None:
    limiter = DeviceLimiter(1, 100)  # bursts: 10 messages, 1,000 bytes
    assert limiter.check("d", 1000, 0.0) is None
    assert [limiter.check("d", 100, 0.0) for _ in range(5)] == [BYTES] * 5
    assert passed(limiter, "d", 20, now=0.0, size=0) == 9  # 10 messages in the burst, 1 taken


def test_zero_means_no_limit() -> None:
    limiter = DeviceLimiter(0, 0)
    assert not limiter.enabled
    assert passed(limiter, "d", 10_000, now=0.0, size=10**9) == 10_000
    assert DeviceLimiter(0, 1).enabled and DeviceLimiter(1, 0).enabled


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        DeviceLimiter(-1, 0)
    with pytest.raises(ValueError):
        DeviceLimiter(1, 0, max_devices=0)


def test_millions_of_device_ids_keep_the_map_bounded_and_busy_devices_remembered() -> None:
    limiter = DeviceLimiter(10, 0, max_devices=100)
    assert passed(limiter, "busy", 200, now=0.0) == 100
    for i in range(100_000):  # an attacker's ids, each seen once, with the busy device among them
        assert limiter.check(f"id-{i}", 10, 0.0) is None
        if i % 50 == 0:
            assert limiter.check("busy", 10, 0.0) == RATE  # recently seen: its debt is kept
        assert len(limiter) <= 100
    assert len(limiter) == 100


def test_a_forgotten_device_starts_with_a_full_bucket() -> None:
    limiter = DeviceLimiter(10, 0, max_devices=2)
    assert passed(limiter, "a", 200, now=0.0) == 100
    limiter.check("b", 1, 0.0)
    limiter.check("c", 1, 0.0)  # "a" is the least recently seen: dropped
    assert passed(limiter, "a", 200, now=0.0) == 100


# --- device keys ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("topic", "key"),
    [
        ("devices/dev-1/temperature", "dev-1"),
        ("qs/v1/dev-2/events", "dev-2"),
        ("stat/f2-0123456789ab/a/1/x", "f2-0123456789ab"),
        ("tele/f2-0123456789AB/door-sensors", "f2-0123456789AB"),
        ("devices", NO_DEVICE),
        ("devices//temperature", NO_DEVICE),
        ("other/dev-1/x", NO_DEVICE),
        ("devices/" + "x" * 500 + "/t", "x" * MAX_DEVICE_KEY),
    ],
)
def test_the_device_is_the_topics_device_segment(topic: str, key: str) -> None:
    assert device_key(topic) == key


def test_device_labels_are_one_printable_short_line() -> None:
    assert device_label("dev-1") == "dev-1"
    assert device_label(NO_DEVICE) == "(topics without a device segment)"
    assert device_label("evil\nINFO forged line") == "evil\\nINFO forged line"
    assert device_label("y" * 100) == "y" * 61 + "..."


# --- the log -------------------------------------------------------------------------------------
def test_one_line_per_device_and_minute_with_the_count_and_the_setting() -> None:
    report = LimitLog(LIMITS)
    for _ in range(3):
        report.record("d1", RATE, 10.0)
    report.record("d1", RATE, 40.0)
    assert report.due(69.9) == []
    assert report.due(70.0) == [
        "device d1 over its limit: 4 messages not written in the last minute (IOT_DEVICE_MAX_MSGS_PER_S=100)"
    ]
    assert report.due(200.0) == []  # nothing new: nothing to say
    report.record("d1", BYTES, 70.5)  # a new window opens with the next limited message
    report.record("d1", TOPIC_TOO_LONG, 71.0)
    assert report.due(130.0) == []
    assert report.due(130.5) == [
        "device d1 over its limit: 2 messages not written in the last minute "
        "(IOT_DEVICE_MAX_BYTES_PER_S=1048576: 1; topic longer than 1024 bytes: 1)"
    ]


def test_flush_says_everything_open_at_once() -> None:
    report = LimitLog(LIMITS)
    report.record("a", RATE, 0.0)
    report.record("b", TOPIC_TOO_LONG, 30.0)
    assert sorted(report.flush()) == [
        "device a over its limit: 1 messages not written in the last minute (IOT_DEVICE_MAX_MSGS_PER_S=100)",
        "device b over its limit: 1 messages not written in the last minute (topic longer than 1024 bytes)",
    ]
    assert report.flush() == []


def test_the_log_stays_bounded_under_many_devices() -> None:
    report = LimitLog(LIMITS, max_devices=3)
    for i in range(10):
        report.record(f"d{i}", RATE, 0.0)
    lines = report.due(60.0)
    assert len(lines) == 4
    assert lines[-1] == (
        "7 more devices over their limits: 7 messages not written in the last minute "
        "(IOT_DEVICE_MAX_MSGS_PER_S=100)"
    )
    for i in range(100_000):
        report.record(f"id-{i}", RATE, 100.0)
    lines = report.flush()
    assert len(lines) == 4
    assert lines[-1].startswith("30+ more devices over their limits: 99997 messages not written")
