"""The `iot-etl` command on the real services."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import psycopg
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from dagster_project.lib.retention import has_timescaledb
from iot_core.settings import Settings, get_settings
from iot_etl.cli import main
from tests.support import PrivateMosquitto, PrivateRedis
from tests.support.status import assert_exit, settled
from tests.support.waiting import wait_until

pytestmark = pytest.mark.services


def _subcommands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command path of the click group, nested groups included (e.g. ("db", "migrate")), those
    imported on first use too."""
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, name
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from _subcommands(command, path)


def _iot_etl() -> list[str]:
    """The installed `iot-etl` console script: what users and compose.yaml run."""
    script = Path(sys.executable).with_name("iot-etl")
    assert script.exists(), f"{script} is missing: install the project (scripts/setup.sh)"
    return [str(script)]


def test_every_subcommand_answers_help() -> None:
    paths = list(_subcommands(main))
    assert {("listen",), ("broker",), ("broker-config",), ("db", "migrate"), ("up",), ("simulate",)} <= set(
        paths
    )
    assert ("certs", "init") in paths
    for path in [(), *paths]:
        result = subprocess.run([*_iot_etl(), *path, "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"iot-etl {' '.join(path)} --help: {result.stderr}"
        assert "Usage:" in result.stdout


def test_listen_through_the_cli_ingests_and_stops_on_sigterm() -> None:
    run = uuid.uuid4().hex[:8]
    stream = f"test:cli-listen:{run}"
    with PrivateMosquitto() as broker, PrivateRedis() as redis_server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
        env.update(broker.env())
        env.update(redis_server.env())
        env.update(
            {
                "IOT_STREAM_PREFIX": stream,
                "IOT_LISTENER_CLIENT_ID": f"cli-listen-{run}",
                "IOT_LISTENER_METRICS_PORT": "0",
            }
        )
        listener = subprocess.Popen(
            [*_iot_etl(), "listen"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            client = redis_server.client()

            def landed() -> bool:
                # the listener subscribes once connected; until then a message has nobody to go to
                assert listener.poll() is None, listener.stdout.read().decode(errors="replace")  # type: ignore[union-attr]
                broker.publish_many([(f"devices/cli-{run}/temperature", b"21.5")], qos=1)
                return client.xlen(stream) > 0

            assert wait_until(landed, timeout_s=60, interval_s=0.5), "no stream entry within 60 s"
            entry = client.xrange(stream, count=1)[0][1]
            assert entry[b"topic"] == f"devices/cli-{run}/temperature".encode()
            assert entry[b"payload"] == b"21.5"
            listener.send_signal(signal.SIGTERM)
            assert listener.wait(timeout=60) == 0, listener.stdout.read().decode(errors="replace")  # type: ignore[union-attr]
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.wait(timeout=10)


def test_db_migrate_is_idempotent(migrated_db: str) -> None:
    result = CliRunner().invoke(main, ["db", "migrate"])
    assert result.exit_code == 0, result.output
    assert "0 migration(s) applied" in result.output


def test_status_reports_each_part(clean_db: str, settings: Settings) -> None:
    result, failed = settled(lambda: CliRunner().invoke(main, ["status"]), clean_db)
    assert_exit(result.exit_code, result.output, failed)
    lines = result.output.splitlines()
    assert any(line.startswith("database engine") for line in lines)
    with psycopg.connect(clean_db) as conn:
        (autovacuum,) = conn.execute("SHOW autovacuum").fetchone()
    vacuum_line = next(line for line in lines if line.startswith("database autovacuum"))
    if autovacuum == "on":
        assert vacuum_line.endswith(" on")
    else:  # the CI server's configuration
        assert "off: the tables are never analysed" in vacuum_line and "autovacuum = on" in vacuum_line
    assert any(line.startswith("database raw_messages") and line.endswith(" 0") for line in lines)
    assert any(line.startswith(f"redis {settings.stream_prefix}") for line in lines)
    assert any(line.startswith("broker messages dropped") for line in lines)


def test_status_says_what_is_unreachable(settings: Settings) -> None:
    from iot_etl import status

    broken = settings.model_copy(
        update={
            "database_url": SecretStr("postgresql://postgres@127.0.0.1:1/none"),
            "redis_url": SecretStr("redis://127.0.0.1:1/0"),
        }
    )
    lines = {
        (line.part, line.item): line.value
        for line in status.database_status(broken) + status.redis_status(broken)
    }
    assert set(lines) == {("database", "error"), ("redis", "error")}
    assert "127.0.0.1" in lines[("database", "error")] and "127.0.0.1" in lines[("redis", "error")]


def test_broker_config_lifts_the_message_limit_and_binds_the_configured_host() -> None:
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            main, ["broker-config", "--port", "1999"], env={"IOT_MQTT_HOST": "127.0.0.1"}
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "listener 1999 127.0.0.1" in result.output and "max_queued_messages 0" in result.output
    assert "0.0.0.0" not in result.output
    result = CliRunner().invoke(main, ["broker-config", "--port", "1999", "--all-interfaces"])
    assert result.exit_code == 0, result.output
    assert "listener 1999 0.0.0.0" in result.output


def test_timescaledb_path_where_the_extension_exists(migrated_db: str) -> None:
    with psycopg.connect(migrated_db) as conn:
        if not has_timescaledb(conn):
            preloaded = conn.execute("SHOW shared_preload_libraries").fetchone()
            assert "timescaledb" not in preloaded[0], "TimescaleDB is preloaded but 004 did not create it"
            pytest.skip("TimescaleDB is not preloaded on this server: the plain PostgreSQL path is in use")
        hypertables = {
            name
            for (name,) in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")
        }
    assert {"measurements", "raw_messages"} <= hypertables
