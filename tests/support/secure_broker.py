"""`SecureMosquitto`: a real Mosquitto of a test's own running the product's TLS configuration.

The PKI (`iot_core.pki_issue`: two CAs, the broker's certificate, one service certificate per role) lives
in the broker's temporary directory unless the test brings its own; the broker's directory is what
`iot_etl.broker.write_secure_broker_config` writes, and the broker is started the way an operator starts
it, `mosquitto -c DIR/mosquitto.conf` (as root here: it drops to the `mosquitto` user, so this exercises the
files' ownership too). Usage::

    with SecureMosquitto(devices=["dev-a"]) as broker:
        device = broker.client(broker.device_tls("dev-a"), broker.port)          # the device listener
        listener = broker.client(broker.service_tls("listener"), broker.service_port)
        ...

`TlsClient` wraps a paho MQTT v5 client with events for what tests wait on (CONNACK, SUBACK, PUBACK with
its reason code, messages, disconnects); nothing sleeps for a fixed time.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from iot_core.pki_issue import init_pki, issue_device, issue_server, issue_service
from iot_core.pki_layout import SERVICE_ROLES, PkiLayout
from iot_core.settings import Settings
from iot_etl.broker import write_secure_broker_config
from tests.support.ports import free_port, wait_for_port
from tests.support.private_server import ProcessServer
from tests.support.waiting import wait_until

WAIT_S = 20.0  # generous: the machine is shared; nothing asserts on how long a wait took


@dataclass
class TlsClient:
    """A paho MQTT v5 client over TLS and what it saw."""

    client: mqtt.Client
    connected: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)
    connack: list[ReasonCode] = field(default_factory=list)
    session_present: list[bool] = field(default_factory=list)
    disconnects: list[object] = field(default_factory=list)
    messages: list[mqtt.MQTTMessage] = field(default_factory=list)
    pubacks: dict[int, ReasonCode] = field(default_factory=dict)
    subacks: dict[int, list[ReasonCode]] = field(default_factory=dict)
    acked: threading.Condition = field(default_factory=threading.Condition)

    def topics(self) -> list[str]:
        return [m.topic for m in list(self.messages)]

    def wait_connected(self) -> bool:
        """True once CONNACK success arrived; False when the connection ended (or never began) instead."""
        if not wait_until(lambda: self.connected.is_set() or self.closed.is_set(), WAIT_S, interval_s=0.02):
            raise TimeoutError("neither CONNACK nor a closed connection")
        return self.connected.is_set()

    def subscribe(self, topics: Iterable[str], qos: int = 1) -> list[ReasonCode]:
        rc, mid = self.client.subscribe([(t, qos) for t in topics])
        assert rc == mqtt.MQTT_ERR_SUCCESS, rc
        with self.acked:
            assert self.acked.wait_for(lambda: mid in self.subacks or self.closed.is_set(), WAIT_S)
        return self.subacks.get(mid, [])

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False
    ) -> ReasonCode | None:
        """Publish and wait for the PUBACK; its reason code (None when the connection ended first)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        with self.acked:
            self.acked.wait_for(lambda: info.mid in self.pubacks or self.closed.is_set(), WAIT_S)
        return self.pubacks.get(info.mid)

    def wait_for(self, predicate: Callable[[], object], timeout: float = WAIT_S) -> bool:
        """Whether `predicate` came true within `timeout`."""
        return bool(wait_until(predicate, timeout, interval_s=0.02))

    def close(self) -> None:
        """Disconnect (a clean DISCONNECT: the broker keeps a session with an expiry) and stop the loop."""
        if self.connected.is_set() and not self.closed.is_set():
            self.client.disconnect()
            self.wait_for(self.closed.is_set, 5)
        self.client.loop_stop()


def close_all(clients: Iterable[TlsClient]) -> None:
    """Close many clients at once (each loop thread takes up to a second to notice it should stop)."""
    threads = [threading.Thread(target=c.close) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class SecureMosquitto(ProcessServer):
    """`mosquitto -c <write_secure_broker_config's directory>/mosquitto.conf` on two free ports."""

    name = "secure-mosquitto"

    def __init__(
        self,
        *,
        devices: Iterable[str] = (),
        pki_dir: Path | None = None,
        max_payload_bytes: int = 64 * 1024,
    ) -> None:
        super().__init__(host="127.0.0.1", port=None, log_name="mosquitto.log")
        # mkdtemp makes a 0700 folder: the broker's user (mosquitto, when we are root) must pass through it
        os.chmod(self.workdir, 0o711)
        self.service_port = free_port(self.host)
        self.max_payload_bytes = max_payload_bytes
        self.pki = PkiLayout(pki_dir or self.workdir / "pki")
        self.broker_dir = self.workdir / "broker"
        if not self.pki.initialized():
            init_pki(self.pki)
            issue_server(self.pki, [])
            for role in SERVICE_ROLES:
                issue_service(self.pki, role)
        for device_id in devices:
            issue_device(self.pki, device_id)

    def settings(self) -> Settings:
        return Settings(
            mqtt_host=self.host,
            mqtt_tls_port=self.port,
            mqtt_service_host=self.host,
            mqtt_service_port=self.service_port,
            pki_dir=self.pki.root,
            max_payload_bytes=self.max_payload_bytes,
        )

    def start(self, timeout: float = 10.0) -> SecureMosquitto:
        if self.running:
            return self
        conf = write_secure_broker_config(self.settings(), self.broker_dir)
        self._spawn(["mosquitto", "-c", str(conf)], timeout)
        wait_for_port(self.host, self.service_port, timeout=timeout, process=self._process)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        process = self._take_process()
        if process is not None:
            self._terminate(process, timeout)

    # --- clients -----------------------------------------------------------------------------------
    def tls(self, cert: Path | None, key: Path | None) -> ssl.SSLContext:
        """A client context that verifies the broker against `ca-chain.pem`, presenting `cert` if given."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.pki.ca_chain))
        if cert is not None and key is not None:
            context.load_cert_chain(str(cert), str(key))
        return context

    def device_tls(self, device_id: str) -> ssl.SSLContext:
        return self.tls(*self.pki.device(device_id))

    def service_tls(self, name: str) -> ssl.SSLContext:
        return self.tls(*self.pki.service(name))

    def client(
        self,
        context: ssl.SSLContext,
        port: int,
        client_id: str = "",
        *,
        clean_start: bool = True,
        session_expiry_s: int = 0,
    ) -> TlsClient:
        """A connected (or refused: see `TlsClient.wait_connected`) MQTT v5 client; the caller closes it."""
        paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        paho.tls_set_context(context)
        paho.max_queued_messages_set(0)
        state = TlsClient(paho)

        def on_connect(
            _c: mqtt.Client, _u: object, flags: mqtt.ConnectFlags, reason: ReasonCode, _p: object
        ) -> None:
            state.connack.append(reason)
            state.session_present.append(flags.session_present)
            if not reason.is_failure:
                state.connected.set()
            else:
                state.closed.set()

        def on_disconnect(_c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
            state.disconnects.append(reason)
            state.closed.set()
            _c.disconnect()  # no automatic reconnect (paho's loop would, resending what was refused)
            with state.acked:
                state.acked.notify_all()

        def on_publish(_c: mqtt.Client, _u: object, mid: int, reason: ReasonCode, _p: object) -> None:
            with state.acked:
                state.pubacks[mid] = reason
                state.acked.notify_all()

        def on_subscribe(
            _c: mqtt.Client, _u: object, mid: int, reasons: list[ReasonCode], _p: object
        ) -> None:
            with state.acked:
                state.subacks[mid] = reasons
                state.acked.notify_all()

        paho.on_connect = on_connect
        paho.on_disconnect = on_disconnect
        paho.on_publish = on_publish
        paho.on_subscribe = on_subscribe
        paho.on_message = lambda _c, _u, message: state.messages.append(message)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = session_expiry_s
        try:
            paho.connect(self.host, port, clean_start=clean_start, properties=properties)
        except (ssl.SSLError, OSError):
            state.closed.set()  # refused during the handshake
            return state
        paho.loop_start()
        return state
