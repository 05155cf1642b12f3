"""Faults with IOT_SECURITY on: the listener (its own process, its service certificate) SIGKILLed mid-burst,
and the TLS broker SIGKILLed or restarted mid-stream, lose nothing the broker acknowledged to the device
(a broker crash: nothing acknowledged before its last snapshot, which it takes every second).

The device publishes over its own certificate on the device listener, the listener reads on the service
listener; both reconnect by themselves after the fault."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from uuid import uuid4

import paho.mqtt.client as mqtt
import pytest
import redis

from iot_core.settings import Settings
from iot_core.streams import stream_names
from tests.support.secure_broker import SecureMosquitto
from tests.support.up import ROOT
from tests.support.waiting import wait_until

pytestmark = pytest.mark.services
SYSTEM_REDIS = "redis://127.0.0.1:6379/0"
DEVICE = "dev-fault"
WAIT_S = 60.0
SNAPSHOT_S = 1.0  # the generated configuration's autosave interval


@pytest.fixture
def broker() -> Iterator[SecureMosquitto]:
    with SecureMosquitto(devices=[DEVICE]) as b:
        yield b


def listener_env(broker: SecureMosquitto, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
    env.update(
        IOT_SECURITY="true",
        IOT_PKI_DIR=str(broker.pki.root),
        IOT_MQTT_HOST=broker.host,
        IOT_MQTT_TLS_PORT=str(broker.port),
        IOT_MQTT_SERVICE_HOST=broker.host,
        IOT_MQTT_SERVICE_PORT=str(broker.service_port),
        IOT_REDIS_URL=SYSTEM_REDIS,
        IOT_STREAM_PREFIX=prefix,
        IOT_LISTENER_CLIENT_ID=f"listener-{uuid4().hex[:8]}",
        IOT_LISTENER_METRICS_PORT="0",
        IOT_DEVICE_MAX_MSGS_PER_S="0",  # one device sends far more than a device should
    )
    return env


def start_listener(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ingest_listener"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stored(prefix: str) -> set[bytes]:
    client = redis.Redis.from_url(SYSTEM_REDIS)
    try:
        return {f[b"payload"] for s in stream_names(prefix, 1) for _id, f in client.xrange(s)}
    finally:
        client.close()


class Device:
    """A device on its own certificate, publishing numbered QoS 1 messages and noting when each was
    acknowledged; paho reconnects it and re-sends what was not acknowledged."""

    def __init__(self, broker: SecureMosquitto) -> None:
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=DEVICE, protocol=mqtt.MQTTv5
        )
        self.client.tls_set_context(broker.device_tls(DEVICE))
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.payload_of: dict[int, bytes] = {}
        self.acked_mid_at: dict[int, float] = {}
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.client.on_connect = lambda *_a: self.connected.set()
        self.client.on_disconnect = lambda *_a: self.connected.clear()
        self.client.on_publish = self._on_publish
        self.client.connect(broker.host, broker.port, keepalive=10, clean_start=False)
        self.client.loop_start()
        assert self.connected.wait(WAIT_S)

    def _on_publish(self, _c: object, _u: object, mid: int, reason: object, _p: object) -> None:
        # paho calls this holding its own lock: never wait here for a lock held around a paho call
        if not reason.is_failure:  # type: ignore[attr-defined]
            with self.lock:
                self.acked_mid_at.setdefault(mid, time.monotonic())

    def publish(self, n: int) -> None:
        payload = str(n).encode()
        info = self.client.publish(f"devices/{DEVICE}/seq", payload, qos=1)
        with self.lock:
            self.payload_of[info.mid] = payload

    def stream(self, start: int, count: int, rate: float) -> threading.Thread:
        def run() -> None:
            began = time.monotonic()
            for i in range(count):
                delay = began + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.publish(start + i)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def acked(self) -> dict[bytes, float]:
        """Payload -> when the broker acknowledged it (the first time)."""
        with self.lock:
            out: dict[bytes, float] = {}
            for mid, at in self.acked_mid_at.items():
                if mid in self.payload_of:
                    out.setdefault(self.payload_of[mid], at)
            return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_listener_sigkilled_mid_burst_loses_nothing(broker: SecureMosquitto, prefix: str) -> None:
    env = listener_env(broker, prefix)
    listener = start_listener(env)
    device = Device(broker)
    try:
        wait_until(lambda: device.publish(-1) or b"-1" in stored(prefix), WAIT_S, interval_s=0.5)
        sender = device.stream(0, 3000, rate=500)
        wait_until(lambda: len(stored(prefix)) > 500, WAIT_S, interval_s=0.1)
        os.killpg(listener.pid, signal.SIGKILL)
        listener.wait(10)
        sender.join(WAIT_S)
        listener = start_listener(env)
        assert wait_until(lambda: len(device.acked()) >= 3001, WAIT_S, interval_s=0.2)
        acked = set(device.acked())
        wait_until(lambda: acked <= stored(prefix), WAIT_S, interval_s=0.5)
        assert acked - stored(prefix) == set()
    finally:
        device.close()
        os.killpg(listener.pid, signal.SIGTERM)
        listener.wait(20)


@pytest.mark.parametrize("fault", ["sigkill", "restart"])
def test_broker_fault_mid_stream_loses_nothing_acknowledged_before_its_last_snapshot(
    broker: SecureMosquitto, prefix: str, fault: str
) -> None:
    env = listener_env(broker, prefix)
    listener = start_listener(env)
    device = Device(broker)
    try:
        wait_until(lambda: device.publish(-1) or b"-1" in stored(prefix), WAIT_S, interval_s=0.5)
        sender = device.stream(0, 2000, rate=400)
        wait_until(lambda: len(device.acked()) > 800, WAIT_S, interval_s=0.05)
        crashed_at = time.monotonic()
        if fault == "sigkill":
            broker.kill()
        else:
            broker.stop()
        broker.start()
        sender.join(WAIT_S)
        wait_until(lambda: device.connected.is_set(), WAIT_S, interval_s=0.2)
        device.publish(99_999)  # after the fault: every message's fate is settled once it is in
        assert wait_until(lambda: b"99999" in stored(prefix), WAIT_S, interval_s=0.5)
        acked = device.acked()
        lost = set(acked) - stored(prefix)
        if fault == "restart":
            assert lost == set()
        else:
            # a crash may lose what the broker acknowledged after its last snapshot, nothing older
            assert {p for p in lost if acked[p] < crashed_at - 2 * SNAPSHOT_S} == set()
        after = {p for p, at in acked.items() if at > crashed_at}
        assert after and after <= stored(prefix) | lost
    finally:
        device.close()
        os.killpg(listener.pid, signal.SIGTERM)
        listener.wait(20)


def test_the_listener_runs_on_its_service_certificate(broker: SecureMosquitto, prefix: str) -> None:
    """The fault tests above only mean something if the listener is the secured one."""
    env = listener_env(broker, prefix)
    settings = Settings(**{k[4:].lower(): v for k, v in env.items() if k.startswith("IOT_")})
    assert settings.security and settings.mqtt_service_port == broker.service_port
    listener = start_listener(env)
    device = Device(broker)
    try:
        assert wait_until(lambda: device.publish(-1) or b"-1" in stored(prefix), WAIT_S, interval_s=0.5)
        assert "u'iot-etl-listener'" in broker.log_text()
    finally:
        device.close()
        os.killpg(listener.pid, signal.SIGTERM)
        listener.wait(20)
