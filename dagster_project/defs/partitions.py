"""Hourly arrival-time partitions: micro-batch runs fill the open hour.

The grid starts with the installation: `db migrate` records its start once (sql/017: the hour of the
earliest archived message, else the hour it ran), and `build_definitions` reads it through
`partitions_start`, so a new installation does not show months of "missing" hours before its first
message. `IOT_PARTITIONS_START` overrides it (a user importing older data moves the start back). Nothing
here runs at import: every partitioned asset, check and job is built from the one definition that
`build_hourly_partitions` returns.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import psycopg
from dagster import HourlyPartitionsDefinition

from dagster_project.lib.windows import KEY_FORMAT
from iot_core.redact import redact_text
from iot_core.settings import Settings

#: A partition key's format (Dagster's hourly keys).
#: The start used when the recorded one cannot be read while the definitions load (the database is away,
#: or not migrated yet): the first hour of this release's partitions before the start was recorded.
FALLBACK_START = "2026-11-01-00:00"
#: How long loading the definitions waits for the database before it falls back.
CONNECT_TIMEOUT_S = 5

log = logging.getLogger(__name__)


def build_hourly_partitions(start: str) -> HourlyPartitionsDefinition:
    """Hours from `start` (`YYYY-MM-DD-HH:00`, UTC); end_offset=1 makes the open hour a valid key."""
    return HourlyPartitionsDefinition(start_date=start, end_offset=1, timezone="UTC")


def recorded_start(database_url: str) -> datetime | None:
    """The installation's recorded start (sql/017), None when the database has no row (not migrated).
    Raises psycopg.Error when the database cannot be read."""
    with psycopg.connect(database_url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        if conn.execute("SELECT to_regclass('installation')").fetchone() == (None,):
            return None
        row = conn.execute("SELECT started_at FROM installation").fetchone()
    return row[0] if row else None


def read_partitions_start(settings: Settings) -> tuple[str, str | None]:
    """The first partition key and, when it is `FALLBACK_START`, why: `IOT_PARTITIONS_START` when set,
    else the recorded start, else the fallback."""
    if settings.partitions_start:
        return settings.partitions_start, None
    try:
        started = recorded_start(settings.database_url.get_secret_value())
    except psycopg.Error as exc:
        detail = redact_text((str(exc).strip().splitlines() or [type(exc).__name__])[0])
        return FALLBACK_START, f"the installation's start is unreadable ({detail})"
    if started is None:
        return FALLBACK_START, "the database has no installation start (run db migrate)"
    return started.astimezone(UTC).strftime(KEY_FORMAT), None


def partitions_start(settings: Settings) -> str:
    """The first partition key (see `read_partitions_start`); a fallback is logged in one line."""
    start, why = read_partitions_start(settings)
    if why is not None:
        log.warning("partitions start at %s: %s", start, why)
    return start


def start_time(start: str) -> datetime:
    """A partition key's hour as a UTC datetime."""
    return datetime.strptime(start, KEY_FORMAT).replace(tzinfo=UTC)
