"""The listener end to end against real brokers and Redis servers: nothing lost, bytes untouched, acks
only after the write, persistent sessions, Redis and broker outages, SIGTERM, sharding, metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
import redis

from iot_core.streams import stream_for_topic, stream_names
from tests.support import PrivateMosquitto, PrivateRedis, free_port
from tests.support.listener import SYSTEM_REDIS, count, entries, listener_metric, make_settings, started
from tests.support.waiting import wait_until

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]


# --- helpers -------------------------------------------------------------------------------------
@pytest.fixture
def broker() -> Iterator[PrivateMosquitto]:
    with PrivateMosquitto() as b:
        yield b


def numbered(n: int, start: int = 0, devices: int = 10) -> list[tuple[str, bytes]]:
    return [(f"devices/d{i % devices}/seq", str(i).encode()) for i in range(start, start + n)]


def payload_numbers(rows: list[dict[bytes, bytes]]) -> list[int]:
    return sorted(int(r[b"payload"]) for r in rows)


# --- tests ---------------------------------------------------------------------------------------
def test_binary_payloads_arrive_byte_identical_with_all_fields(broker: PrivateMosquitto, prefix: str) -> None:
    settings = make_settings(broker, prefix, listener_qos=2)
    broker.publish_many([("devices/r1/state", b"\x00retained\xff")], qos=1, retain=True)
    payloads = [
        bytes(range(256)),
        b"",
        b"\xff\xfe\xfd not utf-8 \xc3\x28",
        "27.93 °C".encode(),
        os.urandom(65536),
    ]
    t0 = time.time_ns() // 1000
    listener = started(settings)
    try:
        for qos in (0, 1, 2):
            broker.publish_many([(f"devices/b{qos}/raw", p) for p in payloads], qos=qos)
        assert wait_until(lambda: count(settings) == 1 + 3 * len(payloads), 10)
        t1 = time.time_ns() // 1000
        rows = entries(settings)
    finally:
        assert listener.stop() == 0
    assert all(set(r) == {b"topic", b"payload", b"qos", b"retain", b"rx_us"} for r in rows)
    retained = [r for r in rows if r[b"topic"] == b"devices/r1/state"]
    assert retained == [{**retained[0], b"payload": b"\x00retained\xff", b"retain": b"1", b"qos": b"1"}]
    for qos in (0, 1, 2):
        got = [r for r in rows if r[b"topic"] == f"devices/b{qos}/raw".encode()]
        assert [r[b"payload"] for r in got] == payloads  # order kept within a topic, bytes untouched
        assert {r[b"qos"] for r in got} == {str(qos).encode()}
        assert {r[b"retain"] for r in got} == {b"0"}
    assert all(t0 <= int(r[b"rx_us"]) <= t1 for r in rows)
    assert listener.metrics.value("iot_listener_acks_sent_total") == 1 + 2 * len(payloads)  # QoS 1 and 2


def test_burst_of_5000_qos1_messages_all_arrive_exactly_once(broker: PrivateMosquitto, prefix: str) -> None:
    n = 5000
    settings = make_settings(broker, prefix)
    listener = started(settings)
    try:
        t0 = time.monotonic()
        broker.publish_many(numbered(n), qos=1)
        assert wait_until(lambda: count(settings) >= n, 30)
        elapsed = time.monotonic() - t0
        time.sleep(0.2)
        assert payload_numbers(entries(settings)) == list(range(n))
        assert listener.metrics.value("iot_listener_acks_sent_total") == n
    finally:
        assert listener.stop() == 0
    print(f"\n{n} QoS 1 messages published and written in {elapsed:.2f} s ({n / elapsed:,.0f}/s)")


def test_messages_published_while_listener_is_down_arrive_after_restart(
    broker: PrivateMosquitto, prefix: str
) -> None:
    n = 3000  # more than Mosquitto's default queue limit of 1000
    settings = make_settings(broker, prefix)
    started(settings).stop()  # creates the persistent session and its subscriptions
    broker.publish_many(numbered(n), qos=1)
    broker.restart()  # the queued messages also survive a clean broker restart
    listener = started(settings)
    try:
        assert listener.connections == 1
        assert wait_until(lambda: count(settings) >= n, 20)
        time.sleep(0.2)
        assert payload_numbers(entries(settings)) == list(range(n))
    finally:
        assert listener.stop() == 0


def test_redis_outage_loses_nothing_and_acks_nothing_while_down(
    broker: PrivateMosquitto, prefix: str
) -> None:
    n = 2000
    with PrivateRedis() as server:
        settings = make_settings(broker, prefix, redis_url=server.url, listener_receive_maximum=200)
        client = server.client()
        listener = started(settings)
        publisher = threading.Thread(target=broker.publish_many, args=(numbered(n),), daemon=True)
        try:
            broker.publish_many(numbered(300, start=n))  # before the outage
            assert wait_until(lambda: count(settings, client) == 300, 10)
            server.stop()  # outage (the data set is saved and loaded again on start)
            publisher.start()
            assert wait_until(lambda: listener.writer.unwritten > 0 and not listener.writer.redis_ok, 5)
            time.sleep(0.5)
            acks_during_outage = listener.metrics.value("iot_listener_acks_sent_total")
            time.sleep(1.0)
            assert listener.metrics.value("iot_listener_acks_sent_total") == acks_during_outage == 300
            # unacknowledged messages are bounded by the receive maximum (200): the rest waits at the
            # broker. Mosquitto 2.0.11 overshoots it somewhat under concurrent load (seen: up to ~250;
            # eclipse-mosquitto/mosquitto#2301), hence the slack.
            assert 0 < listener.writer.unwritten <= 400
            server.start()
            assert wait_until(lambda: len(set(payload_numbers(entries(settings, client)))) == n + 300, 30)
            publisher.join(10)
            assert set(payload_numbers(entries(settings, client))) == set(range(n + 300))
        finally:
            assert listener.stop() == 0
            client.close()


def test_broker_reconnect_while_redis_down_never_acks_stale_ids(
    broker: PrivateMosquitto, prefix: str
) -> None:
    n = 300
    with PrivateRedis() as server:
        settings = make_settings(broker, prefix, redis_url=server.url)
        client = server.client()
        listener = started(settings)
        try:
            server.stop()
            broker.publish_many(numbered(n))
            assert wait_until(lambda: listener.writer.unwritten == n, 10)
            broker.restart()  # new connection, same session: the broker redelivers the n messages
            assert wait_until(lambda: listener.connections == 2 and listener.writer.unwritten == 2 * n, 15)
            server.start()
            assert wait_until(lambda: listener.writer.unwritten == 0, 10)
            m = listener.metrics
            assert m.value("iot_listener_acks_skipped_total") == n  # first-connection copies: ids are stale
            assert (
                m.value("iot_listener_acks_sent_total") == n
            )  # redelivered copies, acked on their connection
            rows = entries(settings, client)
            assert Counter(payload_numbers(rows)) == Counter({i: 2 for i in range(n)})  # at-least-once
        finally:
            assert listener.stop() == 0
        # everything was acknowledged in the end: a new start gets nothing redelivered
        other = make_settings(
            broker, prefix + ":again", redis_url=server.url, listener_client_id=settings.listener_client_id
        )
        again = started(other)
        try:
            time.sleep(0.7)
            assert count(other, client) == 0
        finally:
            again.stop()
            client.close()


def test_stop_during_redis_outage_gives_up_in_time_and_the_broker_redelivers(
    broker: PrivateMosquitto, prefix: str
) -> None:
    n = 200
    with PrivateRedis() as server:
        settings = make_settings(broker, prefix, redis_url=server.url)
        listener = started(settings)
        server.stop()
        broker.publish_many(numbered(n))
        assert wait_until(lambda: listener.writer.unwritten == n, 10)
        t0 = time.monotonic()
        assert listener.stop(timeout=1.0) == n  # reported, not acknowledged, not dropped
        assert time.monotonic() - t0 < 4.0
        assert listener.metrics.value("iot_listener_acks_sent_total") == 0
        server.start()
        client = server.client()
        listener = started(settings)  # same client id: the session still holds the n messages
        try:
            assert wait_until(lambda: count(settings, client) >= n, 10)
            assert payload_numbers(entries(settings, client)) == list(range(n))
        finally:
            assert listener.stop() == 0
            client.close()


def test_broker_that_lost_the_session_gets_resubscribed(broker: PrivateMosquitto, prefix: str) -> None:
    settings = make_settings(broker, prefix)
    listener = started(settings)
    try:
        broker.publish_many(numbered(100))
        assert wait_until(lambda: count(settings) == 100, 10)
        broker.restart(keep_sessions=False)
        assert wait_until(lambda: listener.connections == 2 and listener.ready, 15)
        broker.publish_many(numbered(100, start=100))
        assert wait_until(lambda: count(settings) >= 200, 10)
        assert payload_numbers(entries(settings)) == list(range(200))
        assert listener.metrics.value("iot_listener_mqtt_connects_total") == 2
    finally:
        assert listener.stop() == 0


def test_sigterm_flushes_acks_and_exits_0_quickly(
    broker: PrivateMosquitto, prefix: str, tmp_path: Path
) -> None:
    n = 800  # below the receive maximum (1000), so all are in the listener's buffer at once
    metrics_port = free_port()
    client_id = f"test-listener-{uuid4().hex[:10]}"
    env = {
        **os.environ,
        **broker.env(),
        "PYTHONPATH": str(REPO),
        "IOT_REDIS_URL": SYSTEM_REDIS,
        "IOT_STREAM_PREFIX": prefix,
        "IOT_STREAM_SHARDS": "1",
        "IOT_LISTENER_CLIENT_ID": client_id,
        "IOT_LISTENER_TOPICS": "devices/#",
        "IOT_LISTENER_METRICS_PORT": str(metrics_port),
        # flush only on stop: proves SIGTERM writes the buffer
        "IOT_LISTENER_FLUSH_COUNT": "100000",
        "IOT_LISTENER_FLUSH_MS": "600000",
    }
    log_path = tmp_path / "listener.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ingest_listener"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        ready = wait_until(
            lambda: process.poll() is not None or listener_metric(metrics_port, "iot_listener_ready") == 1, 15
        )
        assert ready and process.poll() is None, log_path.read_text()
        broker.publish_many(numbered(n))
        assert wait_until(
            lambda: listener_metric(metrics_port, 'iot_listener_messages_received_total{qos="1"}') == n, 15
        ), log_path.read_text()
        settings = make_settings(broker, prefix)
        assert count(settings) == 0  # still buffered
        t0 = time.monotonic()
        process.send_signal(signal.SIGTERM)
        rc = process.wait(timeout=10)
        exit_s = time.monotonic() - t0
        assert rc == 0, log_path.read_text()
        assert exit_s < 3.0
        assert payload_numbers(entries(settings)) == list(range(n))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    print(f"\nSIGTERM with {n} buffered entries: flushed, acked and exited 0 in {exit_s:.2f} s")
    # the acks went out before the DISCONNECT: the session holds nothing to redeliver
    other = make_settings(broker, prefix + ":again", listener_client_id=client_id)
    again = started(other)
    try:
        time.sleep(0.7)
        assert count(other) == 0
    finally:
        again.stop()


def test_shards_spread_devices_and_keep_each_device_on_one_shard(
    broker: PrivateMosquitto, prefix: str
) -> None:
    settings = make_settings(broker, prefix, stream_shards=4)
    devices = [f"dev{i:02d}" for i in range(16)]
    messages: list[tuple[str, bytes]] = []
    for d in devices:
        messages += [(f"devices/{d}/temp", b"1"), (f"qs/v1/{d}/events", b"{}"), (f"tele/{d}/m/J1/s", b"{}")]
    listener = started(settings)
    try:
        broker.publish_many(messages * 3)
        assert wait_until(lambda: count(settings) == len(messages) * 3, 10)
    finally:
        assert listener.stop() == 0
    client = redis.Redis.from_url(SYSTEM_REDIS)
    shard_of: dict[str, set[str]] = {}
    for stream in stream_names(prefix, 4):
        for _id, fields in client.xrange(stream):
            topic = fields[b"topic"].decode()
            device = topic.split("/")[2] if topic.startswith("qs/") else topic.split("/")[1]
            shard_of.setdefault(device, set()).add(stream)
            assert stream == stream_for_topic(topic, prefix, 4)
    client.close()
    assert set(shard_of) == set(devices)
    assert all(len(s) == 1 for s in shard_of.values())  # a device's messages stay on one shard
    assert len(set().union(*shard_of.values())) >= 3  # and devices spread over the shards


def test_metrics_endpoint_serves_counters(broker: PrivateMosquitto, prefix: str) -> None:
    port = free_port()
    settings = make_settings(broker, prefix, listener_metrics_port=port)
    listener = started(settings)
    try:
        assert listener.metrics_port == port
        broker.publish_many(numbered(10), qos=1)
        broker.publish_many(numbered(5, start=10), qos=0)
        assert wait_until(lambda: count(settings) == 15, 10)
        assert wait_until(lambda: listener_metric(port, "iot_listener_acks_sent_total") == 10, 5)
        expected = {
            'iot_listener_messages_received_total{qos="1"}': 10,
            'iot_listener_messages_received_total{qos="0"}': 5,
            "iot_listener_entries_written_total": 15,
            "iot_listener_buffered_entries": 0,
            "iot_listener_redis_errors_total": 0,
            "iot_listener_mqtt_connects_total": 1,
            "iot_listener_mqtt_connected": 1,
            "iot_listener_ready": 1,
        }
        for name, value in expected.items():
            assert listener_metric(port, name) == value, name
        assert (listener_metric(port, "iot_listener_flushes_total") or 0) >= 1
        assert (listener_metric(port, "iot_listener_flush_duration_seconds_count") or 0) >= 1
    finally:
        assert listener.stop() == 0
    assert listener_metric(port, "iot_listener_ready") is None  # the endpoint is gone after stop()
