"""Publishing the simulated fleet: what arrives at a subscriber of our own, pacing, stopping, the command.

The broker tests use the system Mosquitto and stay small (its default queue limit of 1000 messages would
drop a lagging subscriber's messages); others may publish on the same topics, so arrivals are checked
to contain everything we sent rather than to equal it.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner

from iot_core.mqtt.client import new_client
from iot_core.mqtt.endpoint import MqttEndpoint
from iot_core.mqtt.publisher import PublishError
from iot_core.settings import Settings
from simulator.__main__ import main, simulate_command
from simulator.expected import SentMessage
from simulator.run import run_simulation
from tests.support.waiting import wait_until

TOPIC_FILTERS = ("devices/#", "qs/v1/+/events", "stat/#", "tele/#")


class Subscriber:
    """Our own subscriber to every simulator topic, collecting (topic, payload)."""

    def __init__(self, settings: Settings) -> None:
        self.received: Counter[tuple[str, bytes]] = Counter()
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = new_client(MqttEndpoint.from_settings(settings), f"sim-test-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = self.on_connect
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self.on_message
        self.settings = settings

    def on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, properties: object
    ) -> None:
        client.subscribe([(f, 1) for f in TOPIC_FILTERS])

    def on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.received[(message.topic, message.payload)] += 1

    def __enter__(self) -> Subscriber:
        self.client.connect(self.settings.mqtt_host, self.settings.mqtt_port)
        self.client.loop_start()
        assert self.subscribed.wait(5), "no SUBACK from the broker"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(self, messages: list[SentMessage], timeout_s: float = 10.0) -> Counter[tuple[str, bytes]]:
        """What of `messages` has not arrived when all of it did or the timeout passed."""
        wanted = Counter((m.topic, m.payload) for m in messages)

        def missing() -> Counter[tuple[str, bytes]]:
            with self.lock:
                return wanted - self.received

        wait_until(lambda: not missing(), timeout_s)
        return missing()


@pytest.fixture
def subscriber(settings: Settings) -> Iterator[Subscriber]:
    with Subscriber(settings) as sub:
        yield sub


def counts_of(messages: list[SentMessage]) -> dict[str, dict[str, int]]:
    counts = {kind: {"good": 0, "bad": 0} for kind in ("plain", "event", "f2")}
    for m in messages:
        counts[m.kind]["bad" if m.bad else "good"] += 1
    return counts


@pytest.mark.services
def test_every_message_arrives_and_the_report_counts_it(settings: Settings, subscriber: Subscriber) -> None:
    seen: list[SentMessage] = []
    report = run_simulation(
        settings,
        rate=500,
        count=50,
        seed=int(time.time()),
        bad_share=0.2,
        devices=3,
        on_sent=seen.append,
        keep_messages=True,
    )
    assert report.messages == seen and len(seen) == 50
    assert not subscriber.wait_for(seen)
    assert (report.total, report.acked, report.failed, report.unacked) == (50, 50, 0, 0)
    assert report.counts == counts_of(seen)
    assert report.bad == sum(m.bad for m in seen)
    assert report.readings == sum(len(m.readings) for m in seen)
    assert report.events == sum(len(m.events) for m in seen)
    table = report.table()
    assert f"{'all':<6} {report.good:>9} {report.bad:>9} {50:>9}" in table


@pytest.mark.services
def test_rate_and_duration_pace_the_run(settings: Settings) -> None:
    started = time.monotonic()
    report = run_simulation(settings, rate=40, duration_s=0.5, seed=1, bad_share=0.0, devices=2, qos=0)
    took = time.monotonic() - started
    assert report.total == 20  # due at 0, 1/40, ..., 19/40 s
    assert 0.5 <= report.elapsed_s < 1.5 and took < 3
    assert report.rate == pytest.approx(40, rel=0.25)
    assert (report.acked, report.unacked) == (20, 0)


@pytest.mark.services
def test_a_run_without_count_or_duration_stops_when_told(settings: Settings) -> None:
    stop = threading.Event()
    sent: list[SentMessage] = []

    def on_sent(message: SentMessage) -> None:
        sent.append(message)
        if len(sent) == 5:
            stop.set()

    report = run_simulation(
        settings,
        rate=200,
        count=None,
        duration_s=None,
        seed=2,
        bad_share=0.1,
        kinds=("event", "f2"),
        devices=2,
        on_sent=on_sent,
        stop=stop,
    )
    assert report.total == 5 and report.acked == 5
    assert report.counts["plain"] == {"good": 0, "bad": 0}


@pytest.mark.services
def test_command_prints_the_report(settings: Settings, subscriber: Subscriber) -> None:
    result = CliRunner().invoke(
        simulate_command,
        [
            "--count",
            "10",
            "--rate",
            "200",
            "--kinds",
            "plain,f2",
            "--seed",
            "7",
            "--bad-share",
            "0",
            "--qos",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"{'all':<6} {10:>9} {0:>9} {10:>9}" in result.output
    assert f"{'event':<6} {0:>9} {0:>9} {0:>9}" in result.output
    assert "broker acknowledged 10, failed 0, unacknowledged 0" in result.output


def test_command_refuses_unknown_kinds() -> None:
    result = CliRunner().invoke(simulate_command, ["--kinds", "plain,zigbee"])
    assert result.exit_code == 2 and "--kinds" in result.output
    assert main(["--kinds", ""]) == 2


def test_unreachable_broker_is_one_clear_error(settings: Settings) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    nowhere = settings.model_copy(update={"mqtt_port": port})
    with pytest.raises(PublishError, match=f"cannot reach the MQTT broker at 127.0.0.1:{port}"):
        run_simulation(nowhere, rate=10, count=1, seed=1, bad_share=0, devices=1)
