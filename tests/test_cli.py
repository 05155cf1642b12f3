"""The `iot-etl` command on the real services."""

from __future__ import annotations

import psycopg
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from iot_core.settings import Settings
from iot_etl.cli import main
from iot_etl.migrate import has_timescaledb

pytestmark = pytest.mark.services


def test_db_migrate_is_idempotent(migrated_db: str) -> None:
    result = CliRunner().invoke(main, ["db", "migrate"])
    assert result.exit_code == 0, result.output
    assert "0 migration(s) applied" in result.output


def test_status_reports_each_part(clean_db: str, settings: Settings) -> None:
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("database engine") for line in lines)
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


def test_broker_config_lifts_the_message_limit() -> None:
    result = CliRunner().invoke(main, ["broker-config", "--port", "1999"])
    assert result.exit_code == 0
    assert "listener 1999 0.0.0.0" in result.output and "max_queued_messages 0" in result.output


def test_timescaledb_path_where_the_extension_exists(migrated_db: str) -> None:
    with psycopg.connect(migrated_db) as conn:
        if not has_timescaledb(conn):
            preloaded = conn.execute("SHOW shared_preload_libraries").fetchone()
            assert "timescaledb" not in preloaded[0], "TimescaleDB is preloaded but 004 did not create it"
            pytest.skip("TimescaleDB is not installed on this server: the plain PostgreSQL path is in use")
        hypertables = {
            name
            for (name,) in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")
        }
    assert {"measurements", "raw_messages"} <= hypertables
