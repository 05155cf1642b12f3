"""Listener replicas as real processes (`python -m ingest_listener` with `IOT_*` settings in the environment),
a QoS 1 burst that counts what the broker acknowledged, and what reached the Redis streams.

Usage::

    with PrivateMosquitto() as broker:
        replicas = [ListenerProcess(broker, prefix, replica=str(i), group="g", workdir=tmp) for i in range(2)]
        for r in replicas:
            r.start()
        burst = Burst(broker, count=5000)
        burst.run(when=(1000, replicas[1].kill))   # SIGKILL replica 1 once 1,000 are acknowledged
        replicas[1].start()                         # the same replica id: its session, its held messages
        copies = stream_copies(prefix)              # payload id -> [dup flags]
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import redis

from iot_core.streams import stream_names
from tests.support.listener import listener_metric
from tests.support.listener_process import ListenerSubprocess
from tests.support.mosquitto import PrivateMosquitto
from tests.support.ports import free_port
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
SYSTEM_REDIS = "redis://127.0.0.1:6379/0"


class ListenerProcess(ListenerSubprocess):
    """One replica: `python -m ingest_listener` with its replica name, group and a stream prefix of the
    test's. `start()` again after `kill()` runs the same replica (client id, session) anew."""

    def __init__(
        self,
        broker: PrivateMosquitto,
        prefix: str,
        *,
        replica: str,
        group: str,
        workdir: Path,
        client_id: str = "iotrep-listener",
        **settings: str,
    ) -> None:
        self.replica = replica
        self.metrics_port = free_port()
        env = {
            **os.environ,
            **broker.env(),
            "PYTHONPATH": str(REPO),
            "IOT_REDIS_URL": SYSTEM_REDIS,
            "IOT_STREAM_PREFIX": prefix,
            "IOT_STREAM_SHARDS": "1",
            "IOT_LISTENER_CLIENT_ID": client_id,
            "IOT_LISTENER_REPLICA": replica,
            "IOT_LISTENER_GROUP": group,
            "IOT_LISTENER_METRICS_PORT": str(self.metrics_port),
            "IOT_DEVICE_MAX_MSGS_PER_S": "0",  # a burst from a few devices is not a flood here
            "IOT_DEVICE_MAX_BYTES_PER_S": "0",
            **{f"IOT_{k.upper()}": v for k, v in settings.items()},
        }
        super().__init__(env, workdir / f"listener-{replica}.log", cwd=workdir)

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the process (cwd: the test's folder: no `.env` is read); wait until it has subscribed."""
        process = self.spawn()
        wait_until(
            lambda: (
                process.poll() is not None or listener_metric(self.metrics_port, "iot_listener_ready") == 1
            ),
            timeout_s,
        )
        assert process.poll() is None and listener_metric(self.metrics_port, "iot_listener_ready") == 1, (
            f"replica {self.replica} did not get ready: {self.log_path.read_text()[-2000:]}"
        )


class Burst:
    """`count` QoS 1 messages with payloads `m<i>` over `devices` device topics, from one publisher; which
    of them the broker acknowledged (PUBACK with a success reason code)."""

    def __init__(self, broker: PrivateMosquitto, count: int, devices: int = 50, tag: str = "m") -> None:
        self.broker, self.count, self.devices, self.tag = broker, count, devices, tag
        self.acked: set[str] = set()
        self.refused: list[str] = []
        self._lock = threading.Lock()

    def payload(self, i: int) -> str:
        return f"{self.tag}{i}"

    def run(self, when: tuple[int, Callable[[], None]] | None = None, timeout_s: float = 120.0) -> None:
        """Publish every message (at most 100 unacknowledged at once); `when=(n, action)` runs `action`
        in its own thread once `n` are acknowledged, while the rest are still being published."""
        if self.count >= 65535:
            raise ValueError("one burst holds fewer messages than MQTT has packet ids")
        by_mid: dict[int, str] = {}
        early: dict[int, bool] = {}  # PUBACKs that came before `publish` returned the packet id
        done = threading.Event()
        fired = threading.Event()
        actions: list[threading.Thread] = []

        def settled(payload: str, failed: bool) -> None:  # under self._lock
            (self.refused.append if failed else self.acked.add)(payload)
            if when is not None and not fired.is_set() and len(self.acked) >= when[0]:
                fired.set()
                thread = threading.Thread(target=when[1], name="burst-action")
                thread.start()
                actions.append(thread)
            if len(self.acked) + len(self.refused) >= self.count:
                done.set()

        def on_publish(_c: mqtt.Client, _u: Any, mid: int, reason: Any, _p: Any) -> None:
            # paho holds its own locks here: never call into the client under self._lock
            with self._lock:
                payload = by_mid.pop(mid, None)
                if payload is None:
                    early[mid] = reason.is_failure
                else:
                    settled(payload, reason.is_failure)

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        client.on_publish = on_publish
        client.connect(self.broker.host, self.broker.port)
        client.loop_start()
        try:
            for i in range(self.count):
                payload = self.payload(i)
                info = client.publish(f"devices/d{i % self.devices}/seq", payload, qos=1)
                with self._lock:
                    if info.mid in early:
                        settled(payload, early.pop(info.mid))
                    else:
                        by_mid[info.mid] = payload
            if not done.wait(timeout_s):
                raise TimeoutError(f"{len(self.acked)} of {self.count} acknowledged in {timeout_s} s")
        finally:
            client.disconnect()
            client.loop_stop()
            for thread in actions:
                thread.join(30)


def stream_copies(prefix: str, shards: int = 1) -> dict[str, list[bool]]:
    """payload -> the `dup` flag of each of its entries in the streams of `prefix`."""
    client = redis.Redis.from_url(SYSTEM_REDIS)
    try:
        copies: dict[str, list[bool]] = defaultdict(list)
        for stream in stream_names(prefix, shards):
            for _id, fields in client.xrange(stream):
                copies[fields[b"payload"].decode()].append(fields.get(b"dup") == b"1")
        return dict(copies)
    finally:
        client.close()


def delete_streams(prefix: str) -> None:
    """Delete every key of `prefix` on the shared Redis."""
    client = redis.Redis.from_url(SYSTEM_REDIS)
    try:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
