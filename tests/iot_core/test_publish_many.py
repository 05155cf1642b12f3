"""Publishing many messages at once (`Publisher.publish_many`, how a run sends its ACKs and dead letters):
every message is acknowledged and delivered once, in order, also when the unacknowledged bound is far
smaller than the batch (the publisher waits for room between its wake-ups of paho's thread, never within
them), and across a broker restart."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from iot_core.mqtt.endpoint import MqttEndpoint
from iot_core.mqtt.publisher import PUBLISH_CHUNK, Publisher
from tests.support import PrivateMosquitto
from tests.support.waiting import wait_until

pytestmark = pytest.mark.services

TOPIC = "qs/v1/bulk-{n}/acks"


class Received:
    """A subscriber of every ACK topic at QoS 1 with a persistent session, collecting payloads in order."""

    def __init__(self, broker: PrivateMosquitto) -> None:
        self.payloads: list[bytes] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="bulk-receiver", protocol=mqtt.MQTTv5
        )
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_connect = lambda client, *_: client.subscribe("qs/v1/+/acks", qos=1)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, clean_start=False, properties=_session_kept())
        self.client.loop_start()
        assert self.subscribed.wait(10), "no SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.payloads.append(message.payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _session_kept() -> mqtt.Properties:
    from paho.mqtt.packettypes import PacketTypes

    properties = mqtt.Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 300
    return properties


@pytest.fixture
def broker() -> Iterator[PrivateMosquitto]:
    with PrivateMosquitto() as server:
        yield server


def _messages(count: int) -> list[tuple[str, bytes]]:
    return [(TOPIC.format(n=n % 7), b'{"n":%d}' % n) for n in range(count)]


@pytest.mark.parametrize("max_unacked", [10_000, 50])
def test_every_message_of_a_bulk_publish_is_acknowledged_and_delivered_once_in_order(
    broker: PrivateMosquitto, max_unacked: int
) -> None:
    messages = _messages(5 * PUBLISH_CHUNK + 17)
    received = Received(broker)
    try:
        endpoint = MqttEndpoint(broker.host, broker.port)
        with Publisher(endpoint, "bulk", max_unacked=max_unacked, max_inflight=0) as publisher:
            publisher.publish_many(messages, qos=1)
            assert publisher.wait_for_acks(60), f"{publisher.unacked} unacknowledged"
            assert (publisher.acked, publisher.failed) == (len(messages), 0)
        wait_until(lambda: len(received.payloads) >= len(messages), 30, what="every message delivered")
        assert received.payloads == [payload for _, payload in messages]
    finally:
        received.close()


def test_a_bulk_publish_across_a_broker_restart_is_acknowledged_whole(broker: PrivateMosquitto) -> None:
    """Messages handed over while the broker is away are queued by paho and sent when it is back."""
    messages = _messages(3 * PUBLISH_CHUNK)
    endpoint = MqttEndpoint(broker.host, broker.port)
    with Publisher(endpoint, "bulk", max_inflight=0) as publisher:
        publisher.publish_many(messages[:PUBLISH_CHUNK], qos=1)
        assert publisher.wait_for_acks(30)
        broker.stop()
        publisher.publish_many(messages[PUBLISH_CHUNK:], qos=1)
        broker.start()
        assert publisher.wait_for_acks(60), f"{publisher.unacked} unacknowledged"
        assert (publisher.acked, publisher.failed) == (len(messages), 0)
