"""Listener replicas behind an MQTT shared subscription, as docs/scaling.md describes them: the broker
hands each message to one replica, so together they write every message exactly once. (compose.yaml runs one
listener: a device that joins the group would take a share of the messages.)"""

from __future__ import annotations

import uuid

import pytest
import redis

from ingest_listener import Listener
from iot_core.settings import DEFAULT_TOPICS, Settings
from iot_core.streams import stream_names
from tests.support import PrivateMosquitto
from tests.support.waiting import wait_until

pytestmark = pytest.mark.services

SYSTEM_REDIS = "redis://127.0.0.1:6379/0"


def shared_topics() -> list[str]:
    """Every default topic behind one shared-subscription group (docs/scaling.md)."""
    return Settings(
        listener_topics=",".join(f"$share/iot-listeners/{t}" for t in DEFAULT_TOPICS)
    ).listener_topics


def payloads(prefix: str) -> list[bytes]:
    client = redis.Redis.from_url(SYSTEM_REDIS)
    try:
        return [f[b"payload"] for s in stream_names(prefix, 1) for _id, f in client.xrange(s)]
    finally:
        client.close()


def test_two_replicas_on_shared_topics_write_every_message_once(prefix: str) -> None:
    topics = shared_topics()
    assert all(t.startswith("$share/") for t in topics)
    with PrivateMosquitto() as broker:
        replicas = [
            Listener(
                Settings(
                    mqtt_host=broker.host,
                    mqtt_port=broker.port,
                    redis_url=SYSTEM_REDIS,
                    stream_prefix=prefix,
                    listener_client_id=f"test-share-{i}-{uuid.uuid4().hex[:8]}",
                    listener_metrics_port=0,
                    listener_topics=topics,
                )
            )
            for i in range(2)
        ]
        for listener in replicas:
            listener.start()
        try:
            assert all(listener.wait_ready(15) for listener in replicas)
            n = 400
            sent = [(f"devices/d{i % 7}/seq", str(i).encode()) for i in range(n)]
            sent += [(f"qs/v1/esp-{i}/events", f"e{i}".encode()) for i in range(20)]
            sent += [(f"tele/f2-aabbccddee0{i}/sensor-mode/J1/sensor-1", f"f{i}".encode()) for i in range(20)]
            broker.publish_many(sent, qos=1)
            assert wait_until(lambda: len(payloads(prefix)) >= len(sent), 30)
            assert sorted(payloads(prefix)) == sorted(p for _t, p in sent), "each message exactly once"
            shares = [listener.metrics.value("iot_listener_entries_written_total") for listener in replicas]
            assert sum(shares) == len(sent) and all(s > 0 for s in shares), shares
        finally:
            for listener in replicas:
                listener.stop()


def test_a_stopped_replica_gets_its_share_when_it_returns_with_its_client_id(prefix: str) -> None:
    """Mosquitto keeps handing a stopped member of the group (persistent session) its share of the
    messages; they arrive when a listener with the same client id comes back. This is why each
    replica needs a fixed client id of its own."""

    def replica(broker: PrivateMosquitto, client_id: str) -> Listener:
        listener = Listener(
            Settings(
                mqtt_host=broker.host,
                mqtt_port=broker.port,
                redis_url=SYSTEM_REDIS,
                stream_prefix=prefix,
                listener_client_id=client_id,
                listener_metrics_port=0,
                listener_topics=shared_topics(),
            )
        )
        listener.start()
        assert listener.wait_ready(15)
        return listener

    ids = [f"test-share-{i}-{uuid.uuid4().hex[:8]}" for i in range(2)]
    with PrivateMosquitto() as broker:
        first = replica(broker, ids[0])
        second = replica(broker, ids[1])
        second.stop()
        try:
            sent = [(f"devices/d{i % 5}/seq", str(i).encode()) for i in range(100)]
            broker.publish_many(sent, qos=1)
            assert wait_until(lambda: len(payloads(prefix)) > 0, 15)
            assert not wait_until(lambda: len(payloads(prefix)) == len(sent), 2), (
                "the broker gave the stopped replica no share (behaviour changed: revisit client ids)"
            )
            second = replica(broker, ids[1])
            assert wait_until(lambda: len(payloads(prefix)) == len(sent), 30)
            assert sorted(payloads(prefix)) == sorted(p for _t, p in sent)
        finally:
            first.stop()
            second.stop()


def test_a_listener_that_joins_a_group_under_its_client_id_drops_its_plain_filters(prefix: str) -> None:
    """One listener grows into two: the first keeps its client id (and the session the broker kept for it),
    now with IOT_LISTENER_GROUP. Its session's plain filters go once the shared ones are granted, or it
    would receive every message through them beside its share."""
    client_id = f"test-join-{uuid.uuid4().hex[:8]}"
    group = f"g{uuid.uuid4().hex[:6]}"

    def settings(broker: PrivateMosquitto, **values: object) -> Settings:
        return Settings(
            mqtt_host=broker.host,
            mqtt_port=broker.port,
            redis_url=SYSTEM_REDIS,
            stream_prefix=prefix,
            listener_client_id=client_id,
            listener_metrics_port=0,
            **values,  # type: ignore[arg-type]
        )

    with PrivateMosquitto() as broker:
        alone = Listener(settings(broker))
        alone.start()
        assert alone.wait_ready(15)
        alone.stop()
        pair = [
            Listener(settings(broker, listener_group=group)),
            Listener(settings(broker, listener_group=group, listener_replica="1")),
        ]
        for listener in pair:
            listener.start()
        try:
            assert all(listener.wait_ready(15) for listener in pair)
            sent = [(f"devices/d{i % 5}/seq", str(i).encode()) for i in range(200)]
            broker.publish_many(sent, qos=1)
            assert wait_until(lambda: len(payloads(prefix)) >= len(sent), 30)
        finally:
            for listener in pair:
                listener.stop()
        assert sorted(payloads(prefix)) == sorted(p for _t, p in sent), "each message exactly once"
