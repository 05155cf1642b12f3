"""The services' MQTT clients with IOT_SECURITY on, against a private Mosquitto running the product's TLS
configuration: the listener and the ACK publisher connect to the service listener with their own
certificates, a rotated listener certificate is taken up without losing a message of a QoS 1 burst, and a
broker that refuses the listener or is down is logged once per cause and minute while nothing is lost."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import polars as pl
import pytest
import redis

from dagster_project.defs.resources import resources_from_settings
from ingest_listener import Listener
from iot_core.mqtt.endpoint import MqttEndpoint
from iot_core.mqtt.publisher import Publisher
from iot_core.mqtt.throttled_log import ThrottledLog
from iot_core.mqtt.tls import ClientTls, TlsFileError
from iot_core.pki_crl import revoke
from iot_core.pki_issue import rotate
from iot_core.settings import Settings
from iot_core.streams import stream_names
from iot_etl.broker import write_secure_broker_config
from tests.support.ports import wait_for_port
from tests.support.secure_broker import SecureMosquitto
from tests.support.waiting import wait_until

pytestmark = pytest.mark.services

SYSTEM_REDIS = "redis://127.0.0.1:6379/0"
DEVICE = "dev-a"  # publishes
RECEIVER = "dev-b"  # reads its ACKs (a device certificate is one client id: one connection per device)
WAIT_S = 30.0  # generous: nothing asserts on how long a wait took
LISTENER_LOG = "ingest_listener.listener"


@pytest.fixture
def broker() -> Iterator[SecureMosquitto]:
    with SecureMosquitto(devices=[DEVICE, RECEIVER]) as b:
        yield b


def secure_settings(broker: SecureMosquitto, prefix: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "security": True,
        "pki_dir": broker.pki.root,
        "mqtt_host": broker.host,
        "mqtt_tls_port": broker.port,
        "mqtt_service_host": broker.host,
        "mqtt_service_port": broker.service_port,
        "redis_url": SYSTEM_REDIS,
        "stream_prefix": prefix,
        "stream_shards": 1,
        "listener_client_id": f"test-listener-{uuid4().hex[:10]}",
        "listener_metrics_port": 0,
        "listener_topics": ["devices/#", "qs/v1/+/events", "stat/#", "tele/#"],
        "listener_qos": 1,
        "device_max_msgs_per_s": 0,  # the bursts below are far over the per-device limit
        "device_max_bytes_per_s": 0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def device_endpoint(broker: SecureMosquitto, device_id: str = DEVICE) -> MqttEndpoint:
    cert, key = broker.pki.device(device_id)
    return MqttEndpoint(broker.host, broker.port, tls_ca=broker.pki.ca_chain, tls_cert=cert, tls_key=key)


def payloads(settings: Settings) -> list[bytes]:
    client = redis.Redis.from_url(SYSTEM_REDIS)
    try:
        return [
            fields[b"payload"]
            for stream in stream_names(settings.stream_prefix, settings.stream_shards)
            for _id, fields in client.xrange(stream)
        ]
    finally:
        client.close()


def wait_for_payloads(settings: Settings, expected: set[bytes]) -> set[bytes]:
    """The distinct payloads in the stream once all of `expected` arrived (or the wait gave up)."""
    wait_until(lambda: expected <= set(payloads(settings)), WAIT_S, interval_s=0.2)
    return set(payloads(settings))


def publish(broker: SecureMosquitto, messages: list[bytes], topic: str = f"devices/{DEVICE}/seq") -> None:
    with Publisher(device_endpoint(broker), "", client_id=DEVICE) as device:
        for payload in messages:
            device.publish(topic, payload, qos=1)
        assert device.wait_for_acks(WAIT_S)
        assert device.acked == len(messages)


def connect_lines(caplog: pytest.LogCaptureFixture, address: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LISTENER_LOG and r.getMessage().startswith(f"cannot connect to the broker at {address}")
    ]


# --- endpoints ------------------------------------------------------------------------------------
def test_role_endpoints_use_the_service_listener_and_the_roles_certificates(tmp_path: Path) -> None:
    settings = Settings(security=True, pki_dir=tmp_path, mqtt_service_host="10.0.0.5", mqtt_service_port=9884)
    for role in ("listener", "publisher", "simulator", "ops"):
        endpoint = MqttEndpoint.for_role(settings, role)
        assert (endpoint.host, endpoint.port) == ("10.0.0.5", 9884)
        assert endpoint.tls_ca == tmp_path / "ca-chain.pem"
        assert (endpoint.tls_cert, endpoint.tls_key) == (
            tmp_path / "services" / f"{role}.pem",
            tmp_path / "services" / f"{role}.key",
        )
    explicit = settings.model_copy(
        update={"mqtt_tls_ca": Path("/x/ca.pem"), "mqtt_tls_cert": Path("/x/c.pem"), "mqtt_tls_key": None}
    )
    endpoint = MqttEndpoint.for_role(explicit, "listener")
    assert (endpoint.tls_ca, endpoint.tls_cert) == (Path("/x/ca.pem"), Path("/x/c.pem"))
    assert endpoint.tls_key is None  # the key is in the certificate file
    plain = MqttEndpoint.for_role(Settings(security=False, mqtt_host="h", mqtt_port=1), "listener")
    assert plain == MqttEndpoint.from_settings(Settings(security=False, mqtt_host="h", mqtt_port=1))
    with pytest.raises(ValueError, match="device"):
        MqttEndpoint.for_role(settings, "device")
    with pytest.raises(TlsFileError, match=r"ca-chain\.pem.*iot-etl certs init"):
        ClientTls.for_endpoint(MqttEndpoint.for_role(settings, "listener"))


def test_throttled_log_says_one_line_per_cause_and_period_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.throttled")
    throttled = ThrottledLog(logger, period_s=3600)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        assert throttled.note("refused", "refused") is True
        assert [throttled.note("refused", "refused") for _ in range(5)] == [False] * 5
        assert throttled.note("tls", "tls") is True
        throttled.period_s = 0
        assert throttled.note("refused", "refused") is True
    lines = [r.getMessage() for r in caplog.records if r.name == "test.throttled"]
    assert lines == [
        "refused (1 attempt; retrying)",
        "tls (1 attempt; retrying)",
        "refused (6 attempts since the last such line; retrying)",
    ]
    assert throttled.reset() == 8
    assert throttled.reset() == 0


# --- services over TLS ----------------------------------------------------------------------------
def test_listener_and_ack_publisher_connect_with_their_certificates(
    broker: SecureMosquitto, prefix: str
) -> None:
    settings = secure_settings(broker, prefix)
    device = broker.client(broker.device_tls(RECEIVER), broker.port, RECEIVER)
    try:
        assert device.wait_connected()
        device.subscribe([f"qs/v1/{RECEIVER}/acks"])
        with Listener(settings) as listener:
            assert listener.wait_ready(WAIT_S)
            assert listener.endpoint.port == broker.service_port
            sent = [f"reading {i}".encode() for i in range(20)]
            publish(broker, sent)
            assert wait_for_payloads(settings, set(sent)) == set(sent)

        mqtt = resources_from_settings(settings)["mqtt"]
        assert (mqtt.host, mqtt.port) == (broker.host, broker.service_port)  # type: ignore[attr-defined]
        with mqtt.feedback_sender() as sender:  # type: ignore[attr-defined]
            sender.send(pl.DataFrame({"topic": [f"qs/v1/{RECEIVER}/acks"], "payload": [b'{"ok":true}']}))
            assert sender.finish() == 1, sender.error
        assert device.wait_for(lambda: device.topics() == [f"qs/v1/{RECEIVER}/acks"])
    finally:
        device.close()
    log = broker.log_text()
    # the broker took each service's identity from its certificate (use_identity_as_username)
    assert f"as {settings.listener_client_id} (p5, c0, k30, u'iot-etl-listener')" in log
    assert "u'iot-etl-publisher')" in log


def test_a_rotated_listener_certificate_is_taken_up_and_a_qos1_burst_across_the_switch_loses_nothing(
    broker: SecureMosquitto, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = secure_settings(broker, prefix)
    cert_path, key_path = broker.pki.service("listener")
    caplog.set_level(logging.INFO)
    listener = Listener(settings)
    listener.CERT_WATCH_S = 0.2
    with listener:
        assert listener.wait_ready(WAIT_S)
        old_serial = listener.tls.serial  # type: ignore[union-attr]

        # half written (new key, old certificate): the listener keeps its chain and says so once
        good_key = key_path.read_bytes()
        shutil.copyfile(broker.pki.device(DEVICE)[1], key_path)
        assert wait_until(lambda: "changed on disk but cannot be used" in caplog.text, WAIT_S)
        key_path.write_bytes(good_key)
        assert listener.connections == 1

        sent: list[bytes] = []
        new_serial: list[int] = []
        switched = 0  # messages sent before the listener's second connection
        pace = threading.Event()
        with Publisher(device_endpoint(broker), "", client_id=DEVICE) as device:
            # a steady QoS 1 stream from before the rotation until 500 messages after the reconnect
            while len(sent) < 2000 or len(sent) < switched + 500:
                if len(sent) == 500:
                    new_serial.append(rotate(broker.pki, "listener", revoke_old=False).serial_number)
                if listener.connections < 2:
                    switched = len(sent)
                    assert switched < 30_000, "the listener did not reconnect with its new certificate"
                payload = f"m{len(sent)}".encode()
                device.publish(f"devices/{DEVICE}/seq", payload, qos=1)
                sent.append(payload)
                pace.wait(0.001)
            assert device.wait_for_acks(WAIT_S)
            assert device.acked == len(sent)
        assert 500 <= switched < len(sent)

        assert listener.tls.serial == new_serial[0] != old_serial  # type: ignore[union-attr]
        assert wait_for_payloads(settings, set(sent)) == set(sent)  # duplicates allowed, nothing missing

        # the broker knows the new certificate: with the old one revoked and the broker restarted (which
        # ends every session's connection), the listener is back and receives
        revoke(broker.pki, f"{old_serial:x}")
        broker.restart()
        assert wait_until(lambda: listener.connections >= 3 and listener.ready, WAIT_S)
        publish(broker, [b"after the restart"])
        assert b"after the restart" in wait_for_payloads(settings, {b"after the restart"})
    assert cert_path.is_file()
    assert "was rotated: reconnecting with it" in caplog.text


def test_a_refused_or_unreachable_broker_is_logged_once_per_cause_and_nothing_is_lost(
    broker: SecureMosquitto, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    cert, key = tmp_path / "listener.pem", tmp_path / "listener.key"
    settings = secure_settings(broker, prefix, mqtt_tls_cert=cert, mqtt_tls_key=key)
    address = f"{broker.host}:{broker.service_port}"
    service_cert, service_key = broker.pki.service("listener")
    shutil.copyfile(service_cert, cert)
    shutil.copyfile(service_key, key)

    # a session at the broker, then messages queued in it while no listener is there
    with Listener(settings) as first:
        assert first.wait_ready(WAIT_S)
    queued = [f"queued {i}".encode() for i in range(50)]
    publish(broker, queued)

    # the listener presents a device certificate: the service listener refuses it, again and again
    shutil.copyfile(broker.pki.device(DEVICE)[0], cert)
    shutil.copyfile(broker.pki.device(DEVICE)[1], key)
    listener = Listener(settings)
    listener.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # type: ignore[arg-type]
    with listener:
        assert wait_until(lambda: listener.connect_log.total >= 4, WAIT_S)
        assert not listener.ready
        refused = connect_lines(caplog, address)
        assert len(refused) == 1, refused  # at most one line a minute, however many attempts
        assert refused[0].endswith("(1 attempt; retrying)")
        assert payloads(settings) == []
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

        # the right certificate appears on disk: the next attempt presents it and the queue arrives
        shutil.copyfile(service_key, key)
        shutil.copyfile(service_cert, cert)
        assert listener.wait_ready(WAIT_S)
        assert wait_for_payloads(settings, set(queued)) == set(queued)

        # the broker goes away: one line for that cause too, and the listener comes back with it
        caplog.clear()
        broker.stop()
        assert wait_until(lambda: listener.connect_log.total >= 4, WAIT_S)
        down = connect_lines(caplog, address)
        assert len(down) == 1, down
        assert "Connection refused" in down[0]
        broker.start()
        assert listener.wait_ready(WAIT_S)
        later = [f"later {i}".encode() for i in range(20)]
        publish(broker, later)
        assert wait_for_payloads(settings, set(queued) | set(later)) == set(queued) | set(later)
    connected = [r.getMessage() for r in caplog.records if "failed attempts" in r.getMessage()]
    assert connected, "the connection after the outage says how many attempts failed"


class Tls13Mosquitto(SecureMosquitto):
    """The product's TLS broker with TLS 1.3 instead of 1.2: a client certificate is then refused after
    the client's handshake has completed, when the broker's alert arrives on the first read."""

    def start(self, timeout: float = 10.0) -> Tls13Mosquitto:
        if self.running:
            return self
        conf = write_secure_broker_config(self.settings(), self.broker_dir)
        conf.write_text(conf.read_text().replace("tls_version tlsv1.2", "tls_version tlsv1.3"))
        self._spawn(["mosquitto", "-c", str(conf)], timeout)
        wait_for_port(self.host, self.service_port, timeout=timeout, process=self._process)
        return self


def test_a_certificate_refused_after_a_tls13_handshake_is_one_line_and_no_paho_error(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with Tls13Mosquitto(devices=[DEVICE]) as broker:
        device_cert, device_key = broker.pki.device(DEVICE)
        settings = secure_settings(broker, prefix, mqtt_tls_cert=device_cert, mqtt_tls_key=device_key)
        listener = Listener(settings)
        listener.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # type: ignore[arg-type]
        with listener:
            assert wait_until(lambda: listener.connect_log.total >= 4, WAIT_S)
            assert not listener.ready
    lines = connect_lines(caplog, f"{broker.host}:{broker.service_port}")
    assert len(lines) == 1, lines
    assert "refused this client's certificate" in lines[0]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
