"""A run's feedback sender: pages handed over while the run goes on are published in order and counted
once acknowledged; a broker it cannot reach ends in an error the run can report, not in a hang."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import polars as pl
import pytest

from dagster_project.lib.feedback_sender import FeedbackSender
from iot_core.mqtt.endpoint import MqttEndpoint
from iot_core.mqtt.publisher import PublishError
from tests.support import PrivateMosquitto, free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.services


@pytest.fixture
def broker() -> Iterator[PrivateMosquitto]:
    with PrivateMosquitto() as server:
        yield server


def _page(first: int, count: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "topic": [f"qs/v1/snd-{n % 3}/acks" for n in range(first, first + count)],
            "payload": [b'{"n":%d}' % n for n in range(first, first + count)],
        }
    )


def test_pages_handed_over_one_after_another_are_published_in_order_and_counted(
    broker: PrivateMosquitto,
) -> None:
    received: list[bytes] = []
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda _c, _u, message: received.append(message.payload)
    client.connect(broker.host, broker.port)
    client.subscribe("qs/v1/+/acks", qos=1)
    client.loop_start()
    try:
        assert subscribed.wait(10)
        pages = [_page(0, 1_000), _page(1_000, 0), _page(1_000, 3_000), _page(4_000, 7)]
        with FeedbackSender(MqttEndpoint(broker.host, broker.port), "snd") as sender:
            for page in pages:
                sender.send(page)
                time.sleep(0.05)  # the run decoding its next page
            assert sender.finish() == sender.handed == 4_007
            assert sender.error is None
            assert sender.finish() == 4_007  # again: the same count, nothing waits
        wait_until(lambda: len(received) >= 4_007, 30, what="every message delivered")
        assert received == pl.concat(pages)["payload"].to_list()
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_broker_it_cannot_reach_ends_in_an_error_and_nothing_counted() -> None:
    endpoint = MqttEndpoint("127.0.0.1", free_port())
    with FeedbackSender(endpoint, "snd") as sender:
        sender.send(_page(0, 10))
        sender.send(_page(10, 10))  # handed over after the failure: drained, not waited for
        assert sender.finish() == 0
    assert isinstance(sender.error, PublishError)
    assert sender.handed == 20


def test_a_run_without_feedback_connects_to_no_broker() -> None:
    endpoint = MqttEndpoint("127.0.0.1", free_port())  # nothing listens: a connection would fail
    with FeedbackSender(endpoint, "snd") as sender:
        sender.send(_page(0, 0))
        assert sender.finish() == 0
    assert sender.error is None
