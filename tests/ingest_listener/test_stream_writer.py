"""The stream writer on its own (no MQTT): exact fields, byte-identical payloads, the flush policy,
and the rule that only written entries are reported (so only those get acknowledged)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ingest_listener.metrics import ListenerMetrics
from ingest_listener.stream_writer import BufferedStreamWriter, Entry, StreamWriter, entry_for_message
from iot_core.streams import stream_for_topic
from tests.support import PrivateRedis
from tests.support.waiting import wait_until

# like the listener's own client: the writer does the retrying, redis-py must not retry (and block) itself
NO_RETRY = Retry(NoBackoff(), 0)

BINARY_PAYLOADS = [
    bytes(range(256)),
    b"",
    b"\xff\xfe\x00\x00not utf-8 \xc3\x28",
    "27.93 °C".encode("latin-1"),
    b'{"value": 23.5}',
    os.urandom(200_000),
]


@pytest.fixture
def system_redis(prefix: str) -> Iterator[redis.Redis]:
    """The shared Redis; the `prefix` fixture deletes this test's keys afterwards."""
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    yield client
    client.close()


class Recorder:
    """Collects what `on_written` reports."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.lock = threading.Lock()

    def __call__(self, entries: list[Entry]) -> None:
        with self.lock:
            self.entries.extend(entries)

    def __len__(self) -> int:
        with self.lock:
            return len(self.entries)


def test_entry_fields_and_shard() -> None:
    e = entry_for_message(
        "devices/dev-7/temp", b"\x00\xff", 1, True, prefix="iot:raw", shards=4, rx_us=1700000000123456, mid=9
    )
    assert e.stream == stream_for_topic("devices/dev-7/temp", "iot:raw", 4)
    assert e.fields == {
        "topic": "devices/dev-7/temp",
        "payload": b"\x00\xff",
        "qos": "1",
        "retain": "1",
        "rx_us": "1700000000123456",
    }
    assert (e.qos, e.mid) == (1, 9)
    one = entry_for_message("devices/dev-7/temp", b"", 0, False, prefix="iot:raw", shards=1)
    assert one.stream == "iot:raw"
    assert one.fields["retain"] == "0" and one.fields["qos"] == "0"
    assert abs(int(one.fields["rx_us"]) - time.time_ns() // 1000) < 5_000_000
    assert "dup" not in one.fields  # only a message the broker sent again carries it
    again = entry_for_message(
        "devices/dev-7/temp", b"1", 1, False, prefix="iot:raw", shards=1, redelivered=True
    )
    assert again.fields["dup"] == "1"


@pytest.mark.services
def test_write_is_byte_identical_and_exact(system_redis: redis.Redis, prefix: str) -> None:
    entries = [
        entry_for_message(f"devices/d{i}/raw", p, i % 3, i == 0, prefix=prefix, shards=1, rx_us=1000 + i)
        for i, p in enumerate(BINARY_PAYLOADS)
    ]
    results = StreamWriter(system_redis).write(entries)
    assert all(isinstance(r, bytes) for r in results)
    rows = system_redis.xrange(prefix)
    assert [entry_id for entry_id, _ in rows] == results
    for i, (_id, fields) in enumerate(rows):
        assert fields == {
            b"topic": f"devices/d{i}/raw".encode(),
            b"payload": BINARY_PAYLOADS[i],
            b"qos": str(i % 3).encode(),
            b"retain": b"1" if i == 0 else b"0",
            b"rx_us": str(1000 + i).encode(),
        }


@pytest.mark.services
def test_flush_by_count_then_by_age(system_redis: redis.Redis, prefix: str) -> None:
    seen = Recorder()
    writer = BufferedStreamWriter(StreamWriter(system_redis), flush_count=10, flush_ms=400, on_written=seen)
    writer.start()
    try:
        for i in range(25):
            writer.add(entry_for_message("devices/a/x", str(i).encode(), 1, False, prefix=prefix, shards=1))
        # two full batches go out at once, the 5 left wait for their age
        assert wait_until(lambda: len(seen) == 20, 2.0)
        assert system_redis.xlen(prefix) == 20 and writer.unwritten == 5
        assert wait_until(lambda: len(seen) == 25, 2.0)
        assert [e.fields["payload"] for e in seen.entries] == [str(i).encode() for i in range(25)]
        assert writer.metrics.value("iot_listener_entries_written_total") == 25
        assert writer.metrics.value("iot_listener_buffered_entries") == 0
        assert writer.metrics.value("iot_listener_flushes_total") == 3
    finally:
        assert writer.close(2.0) == 0


@pytest.mark.services
def test_drain_flushes_immediately(system_redis: redis.Redis, prefix: str) -> None:
    writer = BufferedStreamWriter(StreamWriter(system_redis), flush_count=10_000, flush_ms=60_000)
    writer.start()
    try:
        for i in range(7):
            writer.add(entry_for_message("devices/a/x", str(i).encode(), 0, False, prefix=prefix, shards=1))
        time.sleep(0.1)
        assert system_redis.xlen(prefix) == 0
        assert writer.drain(timeout=2.0)
        assert system_redis.xlen(prefix) == 7
    finally:
        writer.close(1.0)


@pytest.mark.services
def test_refused_entry_is_kept_and_others_are_written(system_redis: redis.Redis, prefix: str) -> None:
    bad = f"{prefix}:bad"
    system_redis.set(bad, "not a stream")  # XADD to it fails with WRONGTYPE
    seen = Recorder()
    writer = BufferedStreamWriter(
        StreamWriter(system_redis), flush_count=100, flush_ms=10, on_written=seen, backoff_max_s=0.1
    )
    writer.start()
    try:
        good = [Entry(stream=prefix, fields={"payload": str(i)}, qos=1, mid=i) for i in range(5)]
        refused = Entry(stream=bad, fields={"payload": "x"}, qos=1, mid=99)
        for e in [*good[:2], refused, *good[2:]]:
            writer.add(e)
        assert wait_until(lambda: len(seen) == 5, 2.0)
        assert [e.mid for e in seen.entries] == [0, 1, 2, 3, 4]
        time.sleep(0.3)
        assert writer.unwritten == 1 and not writer.redis_ok
        assert writer.metrics.value("iot_listener_redis_errors_total") >= 1
        system_redis.delete(bad)  # the operator fixes the key: the entry goes in, nothing was lost
        assert wait_until(lambda: len(seen) == 6, 3.0)
        assert seen.entries[-1].mid == 99 and system_redis.xlen(bad) == 1
        assert writer.redis_ok
    finally:
        writer.close(1.0)


@pytest.mark.services
def test_redis_outage_keeps_everything_and_reports_nothing_until_written() -> None:
    with PrivateRedis() as server:
        client = server.client(socket_connect_timeout=1, socket_timeout=2, retry=NO_RETRY)
        seen = Recorder()
        metrics = ListenerMetrics()
        writer = BufferedStreamWriter(
            StreamWriter(client),
            flush_count=20,
            flush_ms=10,
            on_written=seen,
            metrics=metrics,
            backoff_max_s=0.2,
        )
        writer.start()
        try:
            for i in range(30):
                writer.add(Entry(stream="s", fields={"n": str(i)}, qos=1, mid=i))
            assert wait_until(lambda: len(seen) == 30, 2.0)

            server.stop()  # outage (the data set is saved and comes back)
            for i in range(30, 130):
                writer.add(Entry(stream="s", fields={"n": str(i)}, qos=1, mid=i))
            time.sleep(0.8)
            assert len(seen) == 30, "nothing may be reported written while Redis is down"
            assert writer.unwritten == 100 and not writer.redis_ok
            assert metrics.value("iot_listener_redis_up") == 0
            assert metrics.value("iot_listener_redis_errors_total") >= 2  # it keeps retrying

            server.start()
            assert wait_until(lambda: len(seen) == 130, 5.0)
            assert writer.redis_ok and metrics.value("iot_listener_redis_up") == 1
            values = sorted(int(f[b"n"]) for _id, f in client.xrange("s"))
            assert set(values) == set(range(130))  # a retried batch may repeat an entry, never lose one
            assert sorted(e.mid for e in seen.entries) == list(range(130))
        finally:
            assert writer.close(2.0) == 0


@pytest.mark.services
def test_close_gives_up_in_time_when_redis_stays_down() -> None:
    with PrivateRedis() as server:
        client = server.client(socket_connect_timeout=1, socket_timeout=1, retry=NO_RETRY)
        seen = Recorder()
        writer = BufferedStreamWriter(StreamWriter(client), flush_count=10, flush_ms=10, on_written=seen)
        writer.start()
        server.stop(keep_data=False)
        for i in range(3):
            writer.add(Entry(stream="s", fields={"n": str(i)}, qos=1, mid=i))
        started = time.monotonic()
        assert writer.close(0.5) == 3
        assert time.monotonic() - started < 3.0
        assert len(seen) == 0
