"""The simulator as the devices themselves (`--certs-dir`): every simulated device connects to the device
listener of a private TLS Mosquitto with its own certificate, one connection per device, and what it sends
reaches the listener's stream; without it, the simulator connects as the `simulator` service."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
import redis
from click.testing import CliRunner

from ingest_listener import Listener
from iot_core.device_ids import validate_device_id
from iot_core.pki_issue import init_pki, issue_device
from iot_core.pki_layout import PkiLayout
from iot_core.settings import Settings
from iot_core.streams import stream_names
from iot_etl.cli import main
from simulator.messages import MessageFactory
from simulator.run import run_simulation
from tests.support.secure_broker import SecureMosquitto
from tests.support.waiting import wait_until

pytestmark = pytest.mark.services

SYSTEM_REDIS = "redis://127.0.0.1:6379/0"
WAIT_S = 30.0
SEED = 11
DEVICES = 2  # per format: 2 plain + 2 event devices and the 4 F2 controllers


def fleet(seed: int = SEED, devices: int = DEVICES) -> tuple[str, ...]:
    return MessageFactory(seed, devices=devices).device_ids


@pytest.fixture(scope="module")
def broker() -> Iterator[SecureMosquitto]:
    with SecureMosquitto(devices=fleet()) as b:
        yield b


def secure_settings(broker: SecureMosquitto, prefix: str) -> Settings:
    return Settings(
        security=True,
        pki_dir=broker.pki.root,
        mqtt_host=broker.host,
        mqtt_tls_port=broker.port,
        mqtt_service_host=broker.host,
        mqtt_service_port=broker.service_port,
        redis_url=SYSTEM_REDIS,
        stream_prefix=prefix,
        stream_shards=1,
        listener_client_id=f"test-listener-{uuid4().hex[:10]}",
        listener_metrics_port=0,
        listener_topics=["devices/#", "qs/v1/+/events", "stat/#", "tele/#"],
        listener_qos=1,
        device_max_msgs_per_s=0,
        device_max_bytes_per_s=0,
    )


def stream_messages(settings: Settings) -> set[tuple[bytes, bytes]]:
    client = redis.Redis.from_url(SYSTEM_REDIS)
    try:
        return {
            (fields[b"topic"], fields[b"payload"])
            for stream in stream_names(settings.stream_prefix, settings.stream_shards)
            for _id, fields in client.xrange(stream)
        }
    finally:
        client.close()


def test_the_fleets_device_ids_are_valid_certificate_names() -> None:
    for seed in range(20):
        for devices in (1, 3, 8):
            ids = fleet(seed, devices)
            assert len(set(ids)) == len(ids) == 2 * devices + 4
            for device_id in ids:
                assert validate_device_id(device_id) == device_id
    assert MessageFactory(SEED, devices=DEVICES, kinds=("event",)).device_ids == ("esp32-01", "esp32-02")


def test_every_device_publishes_over_its_own_connection_with_its_certificate(
    broker: SecureMosquitto, prefix: str
) -> None:
    settings = secure_settings(broker, prefix)
    log_start = len(broker.log_text())  # the broker serves the whole module
    with Listener(settings) as listener:
        assert listener.wait_ready(WAIT_S)
        report = run_simulation(
            settings,
            rate=2000,
            count=300,
            seed=SEED,
            bad_share=0.0,
            devices=DEVICES,
            keep_messages=True,
            certs_dir=broker.pki.root,
        )
        assert (report.total, report.acked, report.failed, report.skipped) == (300, 300, 0, 0)
        assert report.messages is not None
        sent = {(m.topic.encode(), m.payload) for m in report.messages}
        assert wait_until(lambda: sent <= stream_messages(settings), WAIT_S, interval_s=0.2)
    senders = {m.topic.split("/")[2 if m.topic.startswith("qs/") else 1] for m in report.messages}
    assert senders == set(fleet())  # every device of the fleet sent something
    log = broker.log_text()[log_start:]
    for device_id in fleet():
        # the device listener took client id and username from the device's own certificate, once
        connected = re.findall(
            rf"New client connected from \S+ as {re.escape(device_id)} \(.*u'([^']*)'\)", log
        )
        assert connected == [device_id], (device_id, connected)


def test_unknown_devices_are_not_sent_and_the_broker_acknowledges_the_rest(broker: SecureMosquitto) -> None:
    settings = secure_settings(broker, "unused")
    report = run_simulation(
        settings,
        rate=2000,
        count=60,
        seed=SEED,
        bad_share=1.0,
        kinds=("f2",),
        devices=DEVICES,
        certs_dir=broker.pki.root,
    )
    assert report.skipped > 0  # an unknown F2 controller has no certificate: it cannot connect at all
    assert report.total == 60
    assert report.acked + report.failed == 60
    assert report.unacked == 0


def test_without_certs_dir_the_simulator_connects_as_the_simulator_service(
    broker: SecureMosquitto, prefix: str
) -> None:
    settings = secure_settings(broker, prefix)
    with Listener(settings) as listener:
        assert listener.wait_ready(WAIT_S)
        report = run_simulation(
            settings, rate=2000, count=50, seed=SEED, bad_share=0.0, devices=DEVICES, keep_messages=True
        )
        assert (report.acked, report.failed) == (50, 0)
        assert report.messages is not None
        sent = {(m.topic.encode(), m.payload) for m in report.messages}
        assert wait_until(lambda: sent <= stream_messages(settings), WAIT_S, interval_s=0.2)
    assert re.search(
        r"New client connected from \S+ as iot-etl-simulator-\S+ \(.*u'iot-etl-simulator'\)",
        broker.log_text(),
    )


def test_a_device_without_a_certificate_is_one_line_and_exit_2(tmp_path: Path) -> None:
    layout = PkiLayout(tmp_path / "pki")
    init_pki(layout)
    for device_id in fleet():
        if device_id != "esp32-02":
            issue_device(layout, device_id)
    result = CliRunner().invoke(
        main,
        ["simulate", "--certs-dir", str(layout.root), "--count", "5", "--seed", str(SEED), "--devices", "2"],
        env={"IOT_MQTT_HOST": "127.0.0.1", "IOT_MQTT_TLS_PORT": "1"},  # nothing may connect
    )
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    assert "esp32-02" in lines[0]
    assert "`iot-etl certs device esp32-02`" in lines[0]
