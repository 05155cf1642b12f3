"""`iot-etl up` with IOT_SECURITY: the whole pipeline with certificates, ACL'd Redis users and PostgreSQL
roles, as an operator runs it and as an attacker meets it.

One secured stack (its own broker with a device and a service listener, a private Redis whose default user
is off, a writer role that owns nothing) serves the scenario: a device with its own certificate publishes
all three formats and they are stored; `iot-etl certs revoke` ends its open session and it cannot come back;
no password appears in any child's argv, the logs, the Dagster home, the output or the UI's GraphQL; and
after `up` has run nothing under the state folder is readable by other users.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest

from iot_core.formats.f2 import encode_datapoints, encode_reply, to_hex
from iot_core.redis_acl import render_acl, write_acl_file
from iot_core.settings import Settings
from iot_etl.launch import launch_up
from iot_etl.state_dir import readable_by_others
from simulator.fleet import SENSOR_MODELS
from tests.support.database import database_url, drop_database
from tests.support.embedded_state import remove_system_state
from tests.support.ports import free_port
from tests.support.processes import descendants
from tests.support.redis_server import PrivateRedis
from tests.support.up import ROOT, base_env, path_without_mosquitto, run_up, stop_up, stored_event
from tests.support.waiting import wait_until

pytestmark = pytest.mark.services
DEVICE = "f2-aabbccddee01"  # a seeded F2 controller: one certificate publishes all three formats


def _secret(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def _rows(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


class Device:
    """A device connected to the device listener with its own certificate (paho, MQTT v5)."""

    def __init__(self, pki: Path, device_id: str, port: int) -> None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca-chain.pem"))
        context.load_cert_chain(pki / "devices" / f"{device_id}.pem", pki / "devices" / f"{device_id}.key")
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5
        )
        self.client.tls_set_context(context)
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.refusals = 0
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_a: (self.connected.clear(), self.disconnected.set())
        self.port = port

    def _on_connect(self, _c, _u, _f, reason, _p) -> None:
        if reason.is_failure:
            self.refusals += 1
        else:
            self.connected.set()

    def connect(self) -> None:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        assert self.connected.wait(30), "the device could not connect with a valid certificate"

    def publish(self, topic: str, payload: bytes) -> int:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=15)
        return info.rc

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _can_connect(pki: Path, device_id: str, port: int) -> bool:
    """Whether a fresh TLS connection with the device's certificate is accepted (CONNACK success)."""
    device = Device(pki, device_id, port)
    try:
        device.client.connect("127.0.0.1", port, keepalive=10)
    except (ssl.SSLError, OSError):
        return False
    device.client.loop_start()
    try:
        return device.connected.wait(10)
    finally:
        device.client.disconnect()
        device.client.loop_stop()


def _descendants_cmdlines(root_pid: int) -> dict[int, str]:
    """The argv of `root_pid` and of every process below it."""
    lines = {}
    for pid in descendants(root_pid) | {root_pid}:
        try:
            lines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return lines


def _files_holding(root: Path, secrets: list[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        try:
            if not path.is_file() or path.stat().st_size > 50_000_000:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        found += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return found


def _graphql(port: int) -> str:
    query = """{ repositoriesOrError { ... on RepositoryConnection { nodes { name
        allTopLevelResourceDetails { name configuredValues { key value type } } } } } }"""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def test_a_ui_bound_beyond_loopback_is_refused_before_anything_starts(tmp_path: Path) -> None:
    home = tmp_path / "state" / "dagster_home"
    env = base_env(home, IOT_WEBSERVER_HOST="0.0.0.0", IOT_DATABASE_URL="postgresql://x@127.0.0.1:1/none")
    result = run_up(env)
    assert result.returncode != 0
    assert "IOT_WEBSERVER_AUTH_PROXY" in result.stderr and "0.0.0.0" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "state").exists()  # nothing written, nothing started
    allowed = base_env(home, IOT_WEBSERVER_HOST="0.0.0.0", IOT_WEBSERVER_AUTH_PROXY="oauth2-proxy")
    allowed["IOT_DATABASE_URL"] = "postgresql://x@127.0.0.1:1/none"
    refused_later = run_up(allowed)
    assert "IOT_WEBSERVER_AUTH_PROXY" not in refused_later.stderr  # it got past the check (then no database)


@pytest.mark.slow
def test_secured_stack_stores_a_certified_device_revokes_it_and_leaks_no_secret(tmp_path: Path) -> None:
    workdir = tmp_path / "site"
    state = workdir / ".iot-etl"
    pki = state / "pki"
    name = f"iot_sec_{uuid.uuid4().hex[:8]}"
    writer, reader = f"{name}_writer", f"{name}_reader"
    secrets = {
        "owner": _secret("owner-pw"),
        "writer": _secret("writer-pw"),
        "reader": _secret("reader-pw"),
        "pipeline": _secret("pipeline-pw"),
        "listener": _secret("listener-pw"),
    }
    prefix = f"test:{name}:raw"
    tls_port, service_port = free_port(), free_port()
    with PrivateRedis() as redis_server:
        redis_urls = {
            "IOT_REDIS_URL": redis_server.url_for("iot-pipeline", secrets["pipeline"]),
            "IOT_LISTENER_REDIS_URL": redis_server.url_for("iot-listener", secrets["listener"]),
        }
        acl = render_acl(
            Settings(
                redis_url=redis_urls["IOT_REDIS_URL"],
                listener_redis_url=redis_urls["IOT_LISTENER_REDIS_URL"],
                stream_prefix=prefix,
            )
        )
        redis_server.stop(keep_data=False)
        redis_server.aclfile = write_acl_file(redis_server.workdir / "users.acl", acl)
        redis_server.start()
        owner_url = database_url(name).replace("postgres@", f"postgres:{secrets['owner']}@")
        env = base_env(
            state / "dagster_home",
            IOT_SECURITY="true",
            IOT_PKI_DIR=str(pki),
            IOT_MQTT_TLS_PORT=str(tls_port),
            IOT_MQTT_SERVICE_PORT=str(service_port),
            IOT_DATABASE_OWNER_URL=owner_url,
            IOT_DATABASE_URL=f"postgresql://{writer}:{secrets['writer']}@127.0.0.1:5432/{name}",
            IOT_DATABASE_READER_URL=f"postgresql://{reader}:{secrets['reader']}@127.0.0.1:5432/{name}",
            IOT_STREAM_PREFIX=prefix,
            IOT_WINDOW_SECONDS="5",
            **redis_urls,
        )
        output: list[str] = []
        up = None
        device = None
        try:
            up, banner = launch_up(
                env, "--with-broker", "--no-simulator", timeout_s=300, on_line=output.append
            )
            output.append(banner)
            certs = subprocess.run(
                [sys.executable, "-m", "iot_etl.cli", "certs", "device", DEVICE],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            output.append(certs.stdout + certs.stderr)

            # all three formats from one device certificate are stored, with lineage
            device = Device(pki, DEVICE, tls_port)
            device.connect()
            specs = list(SENSOR_MODELS["th-sensor"])
            f2 = to_hex(encode_reply(1, encode_datapoints({"temperature": 21.5, "humidity": 40.0}, specs)))
            event = stored_event(DEVICE)
            for topic, payload in [
                (f"devices/{DEVICE}/temperature", b"27.93"),
                (f"qs/v1/{DEVICE}/events", json.dumps(event).encode()),
                (
                    f"tele/{DEVICE}/sensor-mode/J1/sensor-1",
                    json.dumps({"timestamp": "2026-12-07 10:00:00.000000", "data": f2}).encode(),
                ),
            ]:
                assert device.publish(topic, payload) == mqtt.MQTT_ERR_SUCCESS
            db = env["IOT_DATABASE_URL"]
            stored = wait_until(
                lambda: (
                    _rows(
                        owner_url,
                        """SELECT count(*) FILTER (WHERE m.name = 'temperature' AND x.value_num = 27.93),
                              count(*) FILTER (WHERE m.name LIKE 'J1.sensor-1.%%')
                       FROM measurements x JOIN devices d USING (device_id) JOIN metrics m USING (metric_id)
                       WHERE d.device_key = %s""",
                        (DEVICE,),
                    )[0]
                    == (1, 2)
                    and _rows(
                        owner_url, "SELECT event_id FROM events WHERE event_id = %s", (event["event_id"],)
                    )
                ),
                120,
                interval_s=0.5,
                what="the three formats in the database",
            )
            assert stored
            # the pipeline wrote as the writer role, which owns nothing
            with psycopg.connect(db) as conn:
                assert conn.execute("SELECT current_user").fetchone() == (writer,)
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("DROP TABLE measurements")

            # a revocation ends the open session within seconds, and the device cannot come back
            device.disconnected.clear()
            revoked = subprocess.run(
                [sys.executable, "-m", "iot_etl.cli", "certs", "revoke", DEVICE],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            output.append(revoked.stdout + revoked.stderr)
            assert device.disconnected.wait(60), "the revoked device's session stayed up"
            device.close()
            device = None
            wait_until(
                lambda: "broker restarted" in "".join(output),
                60,
                interval_s=0.5,
                what="the broker's restart line",
            )
            assert not _can_connect(pki, DEVICE, tls_port)

            # no secret in any child's argv, the logs, the Dagster home, the output or the UI
            values = list(secrets.values())
            argv = _descendants_cmdlines(up.pid)
            assert len(argv) >= 5
            assert [p for p, line in argv.items() if any(s in line for s in values)] == []
            assert _files_holding(state / "logs", values) == []
            assert _files_holding(state / "dagster_home", values) == []
            assert not [s for s in values if s in _graphql(int(env["IOT_WEBSERVER_PORT"]))]
        finally:
            if device is not None:
                device.close()
            if up is not None:
                code = stop_up(up)
            drop_database(name)
            remove_system_state(Settings(dagster_home=state / "dagster_home"))
            with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
                for role in (writer, reader):
                    conn.execute(f'DROP ROLE IF EXISTS "{role}"')
        assert code == 0
        output_text = "".join(output)
        assert not [s for s in secrets.values() if s in output_text]
        assert readable_by_others(state) == []
        assert (pki / "devices" / f"{DEVICE}.key").stat().st_mode & 0o077 == 0
        assert os.stat(pki).st_mode & 0o077 == 0


def test_security_refuses_the_demo_broker_where_no_mosquitto_is_installed(tmp_path: Path) -> None:
    """The demo broker ignores client certificates and has no ACLs: with IOT_SECURITY `up` says so, stops."""
    env = base_env(
        tmp_path / "state" / "dagster_home",
        IOT_SECURITY="true",
        IOT_PKI_DIR=str(tmp_path / "state" / "pki"),
        IOT_MQTT_TLS_PORT=str(free_port()),
        IOT_MQTT_SERVICE_PORT=str(free_port()),
        IOT_DATABASE_URL=database_url(f"iot_never_{uuid.uuid4().hex[:8]}"),
    )
    env["PATH"] = path_without_mosquitto()
    try:
        result = run_up(env, "--with-broker", "--no-simulator")
    finally:
        remove_system_state(Settings(dagster_home=tmp_path / "state" / "dagster_home"))
    assert result.returncode == 1
    assert "demo broker cannot verify client certificates" in result.stderr, result.stderr
    assert "started code-server" not in result.stdout  # no process of the pipeline was started
