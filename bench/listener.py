"""The listener against a bare paho subscriber, draining the same QoS 1 backlog from a private broker.

    .venv/bin/python -m bench.listener [--messages 100000] [--repeat 2]

A private Mosquitto with the project's generated configuration; two persistent sessions (the listener's,
and a bare paho MQTT v5 subscriber's with the same session expiry, receive maximum and QoS 1
subscription) are registered, then `--messages` plain-metric messages are published while both are away,
so each session holds the whole backlog. Each subscriber then drains it alone (the order alternates per
repetition): the paho subscriber only counts its messages (paho acknowledges each as its callback
returns); the listener writes each into its Redis stream before acknowledging it, and counts as done when
the stream holds them all. Prints both rates, their ratio and the load average. Needs the local Redis.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import redis as redis_lib
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest_listener.listener import Listener
from iot_core.settings import Settings
from tests.support.mosquitto import PrivateMosquitto

TOPIC_FILTER = "devices/#"


class BarePaho:
    """The least a QoS 1 subscriber with a persistent session does: receive, count, acknowledge."""

    def __init__(self, broker: PrivateMosquitto, settings: Settings) -> None:
        self.broker, self.settings = broker, settings
        self.client_id = f"bench-bare-{uuid.uuid4().hex[:8]}"
        self.received = 0
        self.subscribed = threading.Event()

    def drain(self, expected: int, timeout_s: float) -> float:
        """Connect, receive `expected` messages; returns the seconds from connecting to the last one."""
        done = threading.Event()

        def on_message(_c: mqtt.Client, _u: Any, _m: mqtt.MQTTMessage) -> None:
            self.received += 1
            if self.received >= expected:
                done.set()

        self.received = 0
        client = self._client(on_message)
        start = time.perf_counter()
        client.loop_start()
        try:
            if not done.wait(timeout_s):
                raise TimeoutError(f"bare paho received {self.received} of {expected}")
            return time.perf_counter() - start
        finally:
            client.disconnect()
            client.loop_stop()

    def register(self) -> None:
        """Create the session and its subscription, then go away (the broker keeps queueing)."""
        client = self._client(lambda *_: None)
        client.loop_start()
        try:
            if not self.subscribed.wait(10):
                raise TimeoutError("bare paho: no SUBACK")
        finally:
            client.disconnect()
            client.loop_stop()

    def _client(self, on_message: Any) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        client.on_message = on_message

        def on_connect(c: mqtt.Client, *_: object) -> None:
            c.subscribe(TOPIC_FILTER, qos=s.listener_qos)

        client.on_connect = on_connect
        client.on_subscribe = lambda *_: self.subscribed.set()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = s.listener_session_expiry_s
        properties.ReceiveMaximum = s.listener_receive_maximum
        client.connect(self.broker.host, self.broker.port, clean_start=False, properties=properties)
        return client


def bench_settings(broker: PrivateMosquitto, redis_url: str) -> Settings:
    """The listener's settings for one repetition: the private broker, a stream and a session of its own."""
    return Settings(
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        redis_url=redis_url,
        stream_prefix=f"bench-listener:{uuid.uuid4().hex[:8]}",
        listener_client_id=f"bench-listener-{uuid.uuid4().hex[:8]}",
        listener_topics=[TOPIC_FILTER],
        listener_metrics_port=0,
    )


def drain_listener(settings: Settings, client: redis_lib.Redis, expected: int, timeout_s: float) -> float:
    """Start the listener on its session; returns the seconds until its stream holds `expected` entries."""
    start = time.perf_counter()
    with Listener(settings, redis_client=client):
        deadline = start + timeout_s
        while client.xlen(settings.stream_prefix) < expected:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"listener wrote {client.xlen(settings.stream_prefix)} of {expected}")
            time.sleep(0.02)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    client = redis_lib.Redis.from_url(args.redis)
    payload = b'{"value": 21.5, "ts": "2026-01-01T00:00:00Z"}'
    rates: dict[str, list[float]] = {"listener": [], "bare paho": []}
    print(f"load average at start {os.getloadavg()}")
    for repetition in range(args.repeat):
        with PrivateMosquitto() as broker:
            settings = bench_settings(broker, args.redis)
            bare = BarePaho(broker, settings)
            try:
                with Listener(settings, redis_client=client) as listener:
                    assert listener.wait_ready(10), "listener did not subscribe"
                bare.register()
                messages = ((f"devices/bench-{i % 100}/temperature", payload) for i in range(args.messages))
                broker.publish_many(messages, timeout=args.timeout)
                order = ["listener", "bare paho"][:: 1 if repetition % 2 == 0 else -1]
                for name in order:
                    if name == "listener":
                        seconds = drain_listener(settings, client, args.messages, args.timeout)
                    else:
                        seconds = bare.drain(args.messages, args.timeout)
                    rates[name].append(args.messages / seconds)
                    print(
                        f"repetition {repetition + 1}: {name:<9} {args.messages / seconds:>9,.0f} msg/s",
                        flush=True,
                    )
            finally:
                client.delete(settings.stream_prefix)
    listener, bare_rate = statistics.median(rates["listener"]), statistics.median(rates["bare paho"])
    print(
        f"median: listener {listener:,.0f} msg/s, bare paho {bare_rate:,.0f} msg/s,"
        f" ratio {listener / bare_rate:.0%}"
    )
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
