"""`iot-etl up` as a user runs it: a message from mosquitto_pub (not our code) becomes queryable, events are
acknowledged over MQTT, invalid ones dead-lettered, and Ctrl-C/SIGTERM stops everything within seconds."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest

from iot_etl.supervisor import launch_up
from tests.support.database import database_url, drop_database
from tests.support.ports import free_port

pytestmark = [pytest.mark.services, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
WINDOW_S = 10


@pytest.fixture
def up_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    name = f"iot_up_{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
    env.update(
        {
            "IOT_DATABASE_URL": database_url(name),
            "IOT_STREAM_PREFIX": f"test:{name}:raw",
            "IOT_LISTENER_CLIENT_ID": f"listener-{name}",
            "IOT_LISTENER_METRICS_PORT": "0",
            "IOT_DAGSTER_HOME": str(tmp_path / "dagster_home"),
            "IOT_WEBSERVER_PORT": str(free_port()),
            "IOT_WINDOW_SECONDS": str(WINDOW_S),
            "IOT_WINDOW_GRACE_MS": "500",
        }
    )
    yield env
    drop_database(name)
    import redis

    client = redis.Redis()
    for key in client.scan_iter(f"test:{name}:*"):
        client.delete(key)


class Subscriber:
    def __init__(self, topics: list[str]) -> None:
        self.messages: queue.Queue[tuple[str, dict]] = queue.Queue()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, json.loads(m.payload)))
        self.client.connect("127.0.0.1", 1883)
        for topic in topics:
            self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def wait_for(self, predicate, timeout_s: float) -> tuple[str, dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                topic, body = self.messages.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if predicate(topic, body):
                return topic, body
        raise AssertionError("expected MQTT message did not arrive")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for_row(url: str, sql: str, params: tuple, timeout_s: float) -> tuple:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(url) as conn:
                row = conn.execute(sql, params).fetchone()
            if row:
                return row
        except psycopg.OperationalError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no row for {sql!r} {params} within {timeout_s} s")


def loaded_definitions(port: int) -> tuple[set[str], set[str], set[tuple[str, ...]]]:
    """What the webserver's code location serves, asked the way the UI asks (GraphQL)."""
    query = (
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { sensors { name } jobs { name } } } } "
        "assetNodes { assetKey { path } } }"
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        data = json.load(response)["data"]
    [repo] = data["repositoriesOrError"]["nodes"]
    return (
        {s["name"] for s in repo["sensors"]},
        {j["name"] for j in repo["jobs"]},
        {tuple(a["assetKey"]["path"]) for a in data["assetNodes"]},
    )


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="needs the mosquitto clients")
def test_up_ingests_foreign_publishes_acks_and_stops_cleanly(up_env: dict[str, str]) -> None:
    up, banner = launch_up(up_env, "--no-simulator")
    url = up_env["IOT_DATABASE_URL"]
    device = f"dev{uuid.uuid4().hex[:6]}"
    subscriber = Subscriber([f"qs/v1/{device}/acks", "qs/v1/deadletter"])
    try:
        assert f"Dagster UI: http://127.0.0.1:{up_env['IOT_WEBSERVER_PORT']}" in banner

        assert loaded_definitions(int(up_env["IOT_WEBSERVER_PORT"])) == (
            {"micro_window_sensor"},
            {"micro_batch_job", "compaction_job", "__ASSET_JOB"},
            {("raw_messages",), ("telemetry",), ("hourly_rollups",), ("compaction",)},
        )
        time.sleep(1.0)  # the listener has subscribed by the time the UI answers; a margin for slow machines
        published = time.monotonic()
        event = {
            "schema": 1,
            "event_id": f"{device}-1",
            "device_id": device,
            "event_type": "temperature",
            "value": 23.5,
            "unit": "C",
            "ts_device": "2024-02-10T00:00:00Z",
            "meta": {"sensor": "dht22"},
        }
        invalid = {"schema": 1, "event_id": f"{device}-2", "device_id": "someone-else", "event_type": "x"}
        for topic, payload in [
            (f"devices/{device}/temperature", "27.93 °C"),
            (f"qs/v1/{device}/events", json.dumps(event)),
            (f"qs/v1/{device}/events", json.dumps(invalid)),
        ]:
            subprocess.run(
                ["mosquitto_pub", "-h", "127.0.0.1", "-p", "1883", "-q", "1", "-t", topic, "-m", payload],
                check=True,
                timeout=10,
            )

        budget = WINDOW_S + 30
        value, unit = wait_for_row(
            url,
            """SELECT x.value_num, m.unit FROM measurements x JOIN devices d USING (device_id)
                    JOIN metrics m USING (metric_id) WHERE d.device_key = %s AND m.name = 'temperature'""",
            (device,),
            budget - (time.monotonic() - published),
        )
        assert (value, unit) == (27.93, "°C")
        stored = wait_for_row(
            url,
            "SELECT e.event_id, e.value_num, e.meta FROM events e JOIN devices d "
            "USING (device_id) WHERE d.device_key = %s",
            (device,),
            5,
        )
        assert stored == (f"{device}-1", 23.5, {"sensor": "dht22"})
        latency = time.monotonic() - published
        print(f"publish -> queryable: {latency:.1f} s (window {WINDOW_S} s)")

        _, ack = subscriber.wait_for(lambda t, b: t.endswith("/acks") and b.get("status") == "stored", 15)
        assert ack == {"schema": 1, "event_id": f"{device}-1", "device_id": device, "status": "stored"}
        _, dead = subscriber.wait_for(
            lambda t, b: t == "qs/v1/deadletter" and device in b.get("topic", ""), 15
        )
        assert dead["error"].startswith("device_mismatch") and json.loads(dead["payload"]) == invalid
    finally:
        subscriber.close()
        stopped = time.monotonic()
        up.send_signal(signal.SIGTERM)
        try:
            code = up.wait(20)
        finally:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGKILL)
    assert code == 0
    assert time.monotonic() - stopped < 15
    groups = [int(pid) for pid in re.findall(r"^started \S+ \(pid (\d+)\)$", banner, re.M)]
    assert len(groups) == 3, banner
    for group in groups:  # each child led its own process group: nothing of it may be left
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)


def test_up_with_its_own_broker_refuses_a_port_in_use(up_env: dict[str, str]) -> None:
    env = {**up_env, "IOT_MQTT_PORT": "1883"}  # the system broker is there
    result = subprocess.run(
        [sys.executable, "-m", "iot_etl.cli", "up", "--with-broker", "--no-simulator"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "127.0.0.1:1883 is already in use" in result.stderr


def test_broker_command_runs_the_project_configuration(up_env: dict[str, str]) -> None:
    port = free_port()
    env = {**up_env, "IOT_MQTT_PORT": str(port)}
    broker = subprocess.Popen(
        [sys.executable, "-m", "iot_etl.cli", "broker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        while True:
            try:
                client.connect("127.0.0.1", port)
                break
            except OSError:
                assert time.monotonic() < deadline, "the project's broker did not come up"
                time.sleep(0.2)
        client.disconnect()
        config = Path(up_env["IOT_DAGSTER_HOME"]).parent / "broker" / "mosquitto.conf"
        assert "max_queued_messages 0" in config.read_text()
        assert f"listener {port} 127.0.0.1" in config.read_text()
    finally:
        broker.terminate()
        assert broker.wait(10) == 0
