"""Every failing `iot-etl` command says what happened and what to do in one line on stderr and exits
non-zero; the traceback appears only with --debug. The real console script runs as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.database import database_url, drop_database
from tests.support.ports import free_port
from tests.support.status import assert_exit, settled

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]
IOT_ETL = str(Path(sys.executable).with_name("iot-etl"))


def run(*args: str, timeout: float = 120, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
    env.update(settings)
    return subprocess.run(
        [IOT_ETL, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("iot-etl: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def unreachable_db(password: str = "") -> str:
    auth = f"postgres:{password}" if password else "postgres"
    return f"postgresql://{auth}@127.0.0.1:{free_port()}/iot_nowhere"


@pytest.fixture
def migrated_db() -> Iterator[str]:
    name = f"iot_clierr_{uuid.uuid4().hex[:8]}"
    result = run("db", "migrate", IOT_DATABASE_URL=database_url(name))
    assert result.returncode == 0, result.stderr
    assert f"database {name}: created" in result.stdout
    yield database_url(name)
    drop_database(name)


def test_a_bad_setting_is_one_line_naming_the_variable() -> None:
    for command in (("status",), ("db", "migrate"), ("simulate", "--count", "1"), ("listen",)):
        result = run(*command, IOT_WINDOW_SECONDS="7")
        line = one_error_line(result)
        assert result.returncode == 1
        assert "bad setting" in line and "IOT_WINDOW_SECONDS=7" in line and "must divide 3600" in line


def test_a_malformed_setting_is_one_line_too() -> None:
    line = one_error_line(run("status", IOT_MQTT_PORT="not-a-port"))
    assert "IOT_MQTT_PORT=not-a-port" in line


def test_db_migrate_with_the_database_down_fails_in_one_line_without_the_password() -> None:
    result = run("db", "migrate", IOT_DATABASE_URL=unreachable_db("pw-0c1d2e"))
    line = one_error_line(result)
    assert result.returncode == 1
    assert "database unreachable" in line and "IOT_DATABASE_URL" in line
    assert "pw-0c1d2e" not in result.stderr + result.stdout


def test_debug_shows_the_traceback() -> None:
    result = run("--debug", "db", "migrate", IOT_DATABASE_URL=unreachable_db())
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "OperationalError" in result.stderr


def test_status_with_redis_down_prints_the_table_and_fails(migrated_db: str) -> None:
    result = run(
        "status",
        IOT_DATABASE_URL=migrated_db,
        IOT_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        IOT_STREAM_PREFIX=f"test:{uuid.uuid4().hex[:8]}:raw",
    )
    line = one_error_line(result)
    assert result.returncode == 1
    assert "redis unreachable" in line and "IOT_REDIS_URL" in line
    assert "database" not in line.split(";")[0].split("(")[0]
    assert "database raw_messages" in result.stdout


def test_status_with_everything_down_names_every_part() -> None:
    result = run(
        "status",
        IOT_DATABASE_URL=unreachable_db(),
        IOT_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        IOT_MQTT_PORT=str(free_port()),
    )
    line = one_error_line(result)
    assert result.returncode == 1
    assert line.startswith("iot-etl: error: database, redis, broker unreachable")


def test_status_with_everything_up_exits_0(migrated_db: str) -> None:
    """Unless a TimescaleDB job failed its last run (`tests.support.status`): then one line says which."""
    prefix = f"test:{uuid.uuid4().hex[:8]}:raw"
    result, failed = settled(
        lambda: run("status", IOT_DATABASE_URL=migrated_db, IOT_STREAM_PREFIX=prefix), migrated_db
    )
    assert_exit(result.returncode, result.stderr, failed)
    if failed:
        one_error_line(result)
    else:
        assert result.stderr == ""


def test_simulate_with_the_broker_down_fails_in_one_line() -> None:
    result = run("simulate", "--count", "5", IOT_MQTT_PORT=str(free_port()))
    line = one_error_line(result)
    assert result.returncode == 1
    assert "MQTT broker" in line and "IOT_MQTT_HOST/IOT_MQTT_PORT" in line


def test_listen_with_its_metrics_port_in_use_fails_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("listen", IOT_LISTENER_METRICS_PORT=str(port), IOT_MQTT_PORT=str(free_port()))
    line = one_error_line(result)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in line and "IOT_LISTENER_METRICS_PORT" in line


def test_backfill_without_a_webserver_fails_in_one_line() -> None:
    result = run(
        "backfill", "--from", "2026-11-02T10", "--to", "2026-11-02T11", IOT_WEBSERVER_PORT=str(free_port())
    )
    line = one_error_line(result)
    assert result.returncode == 1
    assert "Dagster webserver unreachable" in line and "IOT_WEBSERVER_PORT" in line


def test_backfill_with_hours_backwards_or_garbage_fails_in_one_line() -> None:
    backwards = run("backfill", "--from", "2026-11-02T11", "--to", "2026-11-02T10")
    assert backwards.returncode == 1 and "is before --from" in one_error_line(backwards)
    garbage = run("backfill", "--from", "yesterday", "--to", "2026-11-02T10")
    assert garbage.returncode == 1 and "'yesterday' is not an hour" in one_error_line(garbage)


def test_usage_errors_are_one_line_with_where_to_look() -> None:
    result = run("simulate", "--count", "many")
    line = one_error_line(result)
    assert result.returncode == 2
    assert "--count" in line and "iot-etl simulate --help" in line
    unknown = run("frobnicate")
    assert unknown.returncode == 2 and "No such command" in one_error_line(unknown)
