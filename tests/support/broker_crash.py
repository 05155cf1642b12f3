"""Measure what a broker crash loses: QoS 1 messages the broker acknowledged but never delivered.

The scenario is the pipeline's worst case for the broker: the listener (a persistent-session
subscriber) is offline, so every message lives only in the broker's queue. A publisher sends a QoS 1
stream at a steady rate and notes when each PUBACK arrives; the broker is SIGKILLed mid-stream,
started again on the same persistence directory, and the subscriber reconnects to collect its queue.
A marker published after the reconnect ends the collection: the queue is delivered in order, so once
the marker is in, everything the broker still had has arrived.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from iot_etl.broker_config import Autosave
from tests.support.mosquitto import PrivateMosquitto
from tests.support.waiting import wait_until

MARKER = b"end-of-queue"


@dataclass(frozen=True)
class CrashLoss:
    """The outcome of one crash: counts of messages, and the acknowledgements' timing."""

    autosave: Autosave
    published: int  # handed to the client before the crash
    acked: int  # PUBACKed by the broker before the crash
    delivered: int  # of the acked ones, delivered to the subscriber after the restart
    lost: int  # acked and never delivered
    acked_per_s: float  # the stream's rate as the broker acknowledged it
    session_restored: bool  # the subscriber's session came back after the crash
    acked_within: dict[float, int]  # seconds before the crash -> messages acked in that span


class _OfflineSubscriber:
    """A persistent MQTT v5 session (auto-ack) that subscribes, leaves, and later collects its queue."""

    def __init__(self, broker: PrivateMosquitto, client_id: str, topic: str) -> None:
        self.broker, self.client_id, self.topic = broker, client_id, topic
        self.received: list[bytes] = []
        self.session_present = False

    def _connect(self) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        connected = threading.Event()

        def on_connect(_c: mqtt.Client, _u: object, flags: mqtt.ConnectFlags, *_: object) -> None:
            self.session_present = flags.session_present
            connected.set()

        client.on_connect = on_connect
        client.on_message = lambda _c, _u, m: self.received.append(m.payload)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client.connect(self.broker.host, self.broker.port, clean_start=False, properties=props)
        client.loop_start()
        if not connected.wait(15):
            raise TimeoutError("subscriber did not connect")
        return client

    def subscribe_and_leave(self) -> None:
        client = self._connect()
        subscribed = threading.Event()
        client.on_subscribe = lambda *_: subscribed.set()
        client.subscribe(self.topic, qos=1)
        if not subscribed.wait(15):
            raise TimeoutError("no SUBACK")
        client.disconnect()
        client.loop_stop()

    def collect(self, timeout_s: float) -> None:
        """Reconnect, publish the marker behind the queue, and take everything up to it."""
        client = self._connect()
        try:
            self.broker.publish_many([(self.topic.replace("#", "marker"), MARKER)], qos=1)
            if not wait_until(lambda: MARKER in self.received, timeout_s):
                raise TimeoutError(f"the marker did not arrive within {timeout_s} s")
        finally:
            client.disconnect()
            client.loop_stop()


def measure_crash_loss(
    autosave: Autosave,
    *,
    count: int = 1200,
    rate: float = 60.0,
    kill_after_s: float = 10.0,
    spans_s: tuple[float, ...] = (1.0, 2.0, 3.0),
) -> CrashLoss:
    """Publish up to `count` QoS 1 messages at `rate`/s to an offline subscriber, SIGKILL the broker
    `kill_after_s` into the stream, restart it and count what was acknowledged but not delivered."""
    run = uuid.uuid4().hex[:8]
    topic = f"crash/{run}/#"
    with PrivateMosquitto(autosave=autosave) as broker:
        subscriber = _OfflineSubscriber(broker, f"crash-sub-{run}", topic)
        subscriber.subscribe_and_leave()
        broker.restart()  # a clean stop saves the session: it existed long before the crash

        acked_at: dict[int, float] = {}  # seq -> monotonic time of its PUBACK
        seq_of_mid: dict[int, int] = {}
        lock = threading.Lock()

        def on_publish(_c: mqtt.Client, _u: object, mid: int, reason: object, _p: object) -> None:
            if getattr(reason, "is_failure", False):
                return
            now = time.monotonic()
            with lock:
                seq = seq_of_mid.get(mid)
                if seq is not None:
                    acked_at[seq] = now

        publisher = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"crash-pub-{run}", protocol=mqtt.MQTTv5
        )
        publisher.max_inflight_messages_set(100)
        publisher.on_publish = on_publish
        publisher.connect(broker.host, broker.port)
        publisher.loop_start()
        published = 0
        start = time.monotonic()
        try:
            for seq in range(count):
                due = start + seq / rate
                if due >= start + kill_after_s:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                with lock:
                    info = publisher.publish(f"crash/{run}/seq", str(seq).encode(), qos=1)
                    seq_of_mid[info.mid] = seq
                published += 1
            time.sleep(max(0.0, start + kill_after_s - time.monotonic()))
            broker.kill()
            killed_at = time.monotonic()
        finally:
            publisher.loop_stop()  # no reconnect: unacknowledged messages are the publisher's to resend
        with lock:
            acked = dict(acked_at)

        broker.start()
        subscriber.collect(timeout_s=60.0)
        delivered = {int(p) for p in subscriber.received if p != MARKER}
        lost = set(acked) - delivered
        first = min(acked.values(), default=start)
        last = max(acked.values(), default=start)
        return CrashLoss(
            autosave=autosave,
            published=published,
            acked=len(acked),
            delivered=len(set(acked) & delivered),
            lost=len(lost),
            acked_per_s=(len(acked) - 1) / (last - first) if last > first else 0.0,
            session_restored=subscriber.session_present,
            acked_within={s: sum(1 for t in acked.values() if t >= killed_at - s) for s in spans_s},
        )
