"""The acks of one written batch wake paho's network thread once (`iot_core.mqtt.wakeup`).

These read paho's wake-up socket pair, the private part of paho the listener relies on here: a paho that
renames it fails these tests instead of quietly waking its thread once per ack again."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from ingest_listener.acks import AckGate
from ingest_listener.listener import Listener
from ingest_listener.metrics import ListenerMetrics
from ingest_listener.stream_writer import Entry
from iot_core.mqtt.wakeup import NO_WAKE, WAKE_ATTRIBUTE, one_wakeup
from iot_core.settings import Settings


@pytest.fixture
def client() -> Iterator[mqtt.Client]:
    """A manual-ack client with its wake-up socket pair (made by `loop()`), not connected."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    assert client.loop(timeout=0) == mqtt.MQTT_ERR_NO_CONN
    yield client
    client._reset_sockets()


def wakeups(client: mqtt.Client) -> bytes:
    """The wake-up bytes written since the last call."""
    reader: socket.socket = client._sockpairR  # type: ignore[assignment]
    reader.setblocking(False)
    try:
        return reader.recv(10_000)
    except BlockingIOError:
        return b""


def test_paho_wakes_its_thread_once_per_packet_without_it(client: mqtt.Client) -> None:
    for mid in (1, 2, 3):
        client.ack(mid, 1)
    assert wakeups(client) == b"000"
    assert len(client._out_packet) == 3


def test_packets_queued_inside_wake_the_thread_once_at_the_end(client: mqtt.Client) -> None:
    wake = getattr(client, WAKE_ATTRIBUTE)
    with one_wakeup(client):
        for mid in (1, 2, 3):
            client.ack(mid, 1)
        assert getattr(client, WAKE_ATTRIBUTE) is NO_WAKE
        assert wakeups(client) == b""
    assert getattr(client, WAKE_ATTRIBUTE) is wake
    assert wakeups(client) == b"0"
    assert [packet["mid"] for packet in client._out_packet] == [1, 2, 3]


def test_a_failing_ack_still_restores_the_wakeup_and_wakes(client: mqtt.Client) -> None:
    wake = getattr(client, WAKE_ATTRIBUTE)
    with pytest.raises(RuntimeError), one_wakeup(client):
        client.ack(1, 1)
        raise RuntimeError("ack failed")
    assert getattr(client, WAKE_ATTRIBUTE) is wake
    assert wakeups(client) == b"0"


def test_without_a_network_thread_nothing_is_swapped() -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    with one_wakeup(client):
        assert getattr(client, WAKE_ATTRIBUTE) is None


def test_the_ack_gate_wakes_once_per_written_batch(client: mqtt.Client) -> None:
    gate = AckGate(client.ack, ListenerMetrics())
    gate.batch = lambda: one_wakeup(client)
    gate.connection_up(session_present=False)
    entries = [Entry("s", {}, qos=1, mid=mid, generation=gate.generation) for mid in range(1, 501)]
    gate.ack_written(entries)
    assert wakeups(client) == b"0"
    assert [packet["mid"] for packet in client._out_packet] == list(range(1, 501))


def test_the_listener_wakes_paho_once_per_written_batch() -> None:
    listener = Listener(Settings(listener_metrics_port=0))
    client = listener.client
    assert client.loop(timeout=0) == mqtt.MQTT_ERR_NO_CONN  # the socket pair, as loop_start() makes it
    try:
        with listener._acks.batch():
            assert getattr(client, WAKE_ATTRIBUTE) is NO_WAKE
        assert wakeups(client) == b"0"
    finally:
        client._reset_sockets()
