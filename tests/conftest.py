"""Test-wide configuration: a private database and stream prefix per test session, on the real services.

Product code reads configuration only through `iot_core.settings`; tests steer it the way a user does,
with IOT_* environment variables, set here before any product module reads them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.database import database_url, drop_database

_SESSION = uuid.uuid4().hex[:8]
TEST_DB = f"iot_test_{_SESSION}"
_DAGSTER_HOME = tempfile.mkdtemp(prefix="iot-dagster-home-")
atexit.register(shutil.rmtree, _DAGSTER_HOME, ignore_errors=True)
os.environ.update(
    {
        "IOT_DATABASE_URL": database_url(TEST_DB),
        "IOT_REDIS_URL": "redis://127.0.0.1:6379/0",
        "IOT_STREAM_PREFIX": f"test:{_SESSION}:raw",
        "IOT_WINDOW_SECONDS": "10",
        "IOT_WINDOW_GRACE_MS": "500",
        "IOT_SENSOR_SKIP_EMPTY_WINDOWS": "true",
        "IOT_LISTENER_METRICS_PORT": "0",
        "IOT_DAGSTER_HOME": _DAGSTER_HOME,
        # tests put data into hours before the session's database was migrated (its recorded start): they
        # move the partitions' start back as a user importing older data does
        # (tests/dagster_project/test_partitions_start.py covers the recorded start)
        "IOT_PARTITIONS_START": "2026-11-01-00:00",
    }
)

from iot_core.settings import Settings, get_settings  # noqa: E402
from iot_etl.migrate import apply_migrations, ensure_database  # noqa: E402

#: Emptied before each test; raw ids restart at 1, so every table keyed by raw id is among them.
FACT_TABLES = (
    "measurements",
    "events",
    "rejected",
    "raw_messages",
    "raw_elements",
    "feedback_sent",
    "batches",
    "hourly_rollups",
    "rollup_parts",
    "check_verdicts",
)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def migrated_db(settings: Settings) -> Iterator[str]:
    """The session's database, created and migrated once, dropped at the end."""
    ensure_database(settings.database_url.get_secret_value())
    apply_migrations(settings.database_url.get_secret_value())
    yield settings.database_url.get_secret_value()
    drop_database(TEST_DB)


@pytest.fixture
def clean_db(migrated_db: str, settings: Settings) -> Iterator[str]:
    """The migrated database with no facts, raw messages or batches (metadata seeds stay)."""
    import psycopg
    import redis

    with psycopg.connect(migrated_db) as conn:
        conn.execute(f"TRUNCATE {', '.join(FACT_TABLES)} RESTART IDENTITY")
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    keys = list(client.scan_iter(f"{settings.stream_prefix}*"))
    if keys:
        client.delete(*keys)
    yield migrated_db
    keys = list(client.scan_iter(f"{settings.stream_prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def prefix() -> Iterator[str]:
    """A stream prefix of this test's own; its keys are deleted from the shared Redis afterwards."""
    import redis

    value = f"test:{uuid.uuid4().hex}:raw"
    yield value
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        keys = list(client.scan_iter(f"{value}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def up_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a private `iot-etl up` (own database, stream prefix, Dagster home, UI port; see
    `tests.support.up`); its database and stream keys are removed after the test."""
    from tests.support.up import private_up_env

    with private_up_env(tmp_path) as env:
        yield env
