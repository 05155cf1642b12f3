"""The partition grid starts with the installation: `db migrate` records the start once (the hour of the
earliest archived message, else the hour it ran), the definitions are built from it, IOT_PARTITIONS_START
moves it, and a database that cannot be read at load time gives the documented fallback with one line."""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr, ValidationError

from dagster_project.definitions import build_definitions
from dagster_project.defs.partitions import FALLBACK_START, KEY_FORMAT, partitions_start, recorded_start
from iot_core.settings import Settings
from iot_etl.migrate import SQL_DIR, apply_migrations, ensure_database
from tests.support.database import database_url, drop_database
from tests.support.ports import free_port

pytestmark = pytest.mark.services


def floor_hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def fresh_url() -> Iterator[str]:
    """A database of its own, created (not migrated); dropped afterwards."""
    name = f"iot_start_{uuid.uuid4().hex[:8]}"
    url = database_url(name)
    ensure_database(url)
    yield url
    drop_database(name)


def recorded(settings: Settings, url: str) -> Settings:
    """`settings` on `url` with no override: the partitions start where the database says."""
    return settings.model_copy(update={"database_url": SecretStr(url), "partitions_start": None})


def first_key(settings: Settings) -> str:
    job = build_definitions(settings).resolve_job_def("micro_batch_job")
    assert job.partitions_def is not None
    return job.partitions_def.get_first_partition_key() or ""


def test_a_fresh_database_records_its_start_once_and_the_definitions_start_there(
    fresh_url: str, settings: Settings
) -> None:
    before = floor_hour(datetime.now(UTC))
    apply_migrations(fresh_url)
    after = floor_hour(datetime.now(UTC))
    started = recorded_start(fresh_url)
    assert started is not None and before <= started <= after and started == floor_hour(started)

    # a later message and a second migrate change nothing: the start is recorded once
    with psycopg.connect(fresh_url) as conn:
        conn.execute(
            "INSERT INTO raw_messages (arrived_at, stream, entry_ms, entry_seq, topic, payload, qos, retain, "
            "rx_us, batch_id) VALUES (%s, 's', 1, 0, 't', '\\x00', 1, false, 0, 1)",
            (started + timedelta(hours=5),),
        )
    assert apply_migrations(fresh_url) == []
    with psycopg.connect(fresh_url) as conn:
        assert conn.execute("SELECT started_at FROM installation").fetchall() == [(started,)]

    mine = recorded(settings, fresh_url)
    assert partitions_start(mine) == started.strftime(KEY_FORMAT)
    assert first_key(mine) == started.strftime(KEY_FORMAT)


def test_a_database_with_messages_starts_at_the_hour_of_its_earliest_one(
    fresh_url: str, settings: Settings, tmp_path: Path
) -> None:
    """A database migrated before the start was recorded: 017 takes the earliest archived message's hour."""
    earlier = tmp_path / "sql"
    earlier.mkdir()
    for path in SQL_DIR.glob("*.sql"):
        if path.name < "017":
            shutil.copy(path, earlier / path.name)
    apply_migrations(fresh_url, earlier)
    arrivals = [datetime(2026, 10, 20, 5, 37, 12, tzinfo=UTC), datetime(2026, 11, 2, 1, 0, tzinfo=UTC)]
    with psycopg.connect(fresh_url) as conn:
        for n, at in enumerate(arrivals):
            conn.execute(
                "INSERT INTO raw_messages (arrived_at, stream, entry_ms, entry_seq, topic, payload, qos, "
                "retain, rx_us, batch_id) VALUES (%s, 's', %s, 0, 't', '\\x00', 1, false, 0, 1)",
                (at, n),
            )
    later = sorted(path.name.split("_")[0] for path in SQL_DIR.glob("*.sql") if path.name >= "017")
    assert apply_migrations(fresh_url) == later
    assert recorded_start(fresh_url) == datetime(2026, 10, 20, 5, tzinfo=UTC)
    assert first_key(recorded(settings, fresh_url)) == "2026-10-20-05:00"


def test_the_override_moves_the_start_and_is_checked(fresh_url: str, settings: Settings) -> None:
    apply_migrations(fresh_url)
    moved = recorded(settings, fresh_url).model_copy(update={"partitions_start": "2026-09-01-13:00"})
    assert partitions_start(moved) == "2026-09-01-13:00"
    assert first_key(moved) == "2026-09-01-13:00"
    for bad in ("2026-11-20", "2026-11-20-05:30", "2026-11-20T05:00"):
        with pytest.raises(ValidationError, match="partitions_start"):
            Settings(partitions_start=bad)


def test_an_unreadable_start_falls_back_with_one_line(
    fresh_url: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    away = f"postgresql://iot:secret-pw@127.0.0.1:{free_port()}/iot"
    for url in (away, fresh_url):  # nothing listening; a database not migrated
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dagster_project.defs.partitions"):
            assert first_key(recorded(settings, url)) == FALLBACK_START
        lines = [r.getMessage() for r in caplog.records if r.name == "dagster_project.defs.partitions"]
        assert len(lines) == 1 and FALLBACK_START in lines[0], lines
        assert "secret-pw" not in lines[0]
