"""`iot-etl up` refuses to start, in one line and with exit status 1, when it cannot work: a port taken, Redis
or PostgreSQL unreachable, another `up` on the same Dagster home. And the Dagster instance it configures is
one Dagster accepts, with run monitoring on and no secret on disk."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from iot_core.settings import Settings
from iot_etl.dagster_instance import PG_PASSWORD_ENV, dagster_env, write_instance_config
from iot_etl.startup import CannotStart, StackLock
from tests.support.ports import free_port
from tests.support.up import run_up

ROOT = Path(__file__).resolve().parents[2]


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cannot start: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "started " not in result.stdout and "Dagster UI" not in result.stdout


@pytest.mark.services
def test_webserver_port_in_use_is_one_line(up_env: dict[str, str]) -> None:
    port = int(up_env["IOT_WEBSERVER_PORT"])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        assert_refused(run_up(up_env), f"127.0.0.1:{port} is already in use", "IOT_WEBSERVER_PORT")


@pytest.mark.services
def test_listener_metrics_port_in_use_is_one_line(up_env: dict[str, str]) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", port))
        holder.listen()
        result = run_up({**up_env, "IOT_LISTENER_METRICS_PORT": str(port)})
    assert_refused(result, f":{port} is already in use", "IOT_LISTENER_METRICS_PORT")


@pytest.mark.services
def test_redis_unreachable_is_one_line(up_env: dict[str, str]) -> None:
    port = free_port()
    result = run_up({**up_env, "IOT_REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    assert_refused(result, f"Redis at redis://127.0.0.1:{port}/0 is unreachable", "IOT_REDIS_URL")


@pytest.mark.services
def test_postgres_unreachable_is_one_line_without_the_password(up_env: dict[str, str]) -> None:
    port = free_port()
    result = run_up({**up_env, "IOT_DATABASE_URL": f"postgresql://iot:s3cret@127.0.0.1:{port}/iot"})
    assert_refused(result, f"PostgreSQL at postgresql://iot:***@127.0.0.1:{port}/iot is unreachable")
    assert "s3cret" not in result.stderr


def test_one_lock_per_dagster_home_names_its_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib; from iot_etl.startup import StackLock; "
            "lock = StackLock(pathlib.Path(sys.argv[1])); lock.acquire(); "
            "print('locked', flush=True); sys.stdin.read()",
            str(tmp_path),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(CannotStart, match=rf"another iot-etl up \(pid {holder.pid}\) is running"):
            StackLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait(10)
    # the kernel released the dead holder's lock: the next one gets it although the file is still there
    lock = StackLock(tmp_path)
    lock.acquire()
    assert (tmp_path / "up.lock").read_text() == f"{os.getpid()}\n"
    lock.release()


def test_instance_config_is_accepted_by_dagster_with_run_monitoring(tmp_path: Path) -> None:
    from dagster import DagsterInstance

    home = write_instance_config(Settings(dagster_home=tmp_path / "home"))
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_enabled
        assert 0 < instance.run_monitoring_start_timeout_seconds <= 300
        assert instance.run_monitoring_max_runtime_seconds > 0
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 3


def test_postgres_storage_uses_psycopg2_and_keeps_the_password_out_of_the_file(tmp_path: Path) -> None:
    settings = Settings(
        dagster_home=tmp_path / "home",
        dagster_pg_url="postgresql://dagster:p%40ss@db.example:5433/dagster?sslmode=require",
    )
    home = write_instance_config(settings)
    text = (home / "dagster.yaml").read_text()
    assert "p@ss" not in text and "p%40ss" not in text
    assert yaml.safe_load(text)["storage"] == {
        "postgres": {
            "postgres_db": {
                "username": "dagster",
                "hostname": "db.example",
                "port": 5433,
                "db_name": "dagster",
                "scheme": "postgresql+psycopg2",
                "password": {"env": PG_PASSWORD_ENV},
                "params": {"sslmode": "require"},
            }
        }
    }
    assert dagster_env(settings) == {PG_PASSWORD_ENV: "p@ss"}
