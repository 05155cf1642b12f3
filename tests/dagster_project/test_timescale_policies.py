"""TimescaleDB's policies have one source, the settings: `db migrate` adds none of its own, compaction makes
each one what the settings say, and a compaction that finds them so changes nothing: the same jobs, by
id, compaction after compaction (the continuous aggregate's retention policy, looked for under the name
that TimescaleDB before 2.20 reported, was replaced by every compaction). A failed job fails the
`timescale_jobs_healthy` check. Runs where the suite's server has TimescaleDB (`IOT_TEST_PG_SERVER`); the
check passes on plain PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
import pytest
from dagster import DagsterInstance, materialize

from dagster_project.definitions import defs
from dagster_project.defs.maintenance.assets import compaction
from dagster_project.defs.resources import resources_from_settings
from dagster_project.lib.retention import apply_timescale_policies, has_timescaledb, hypertables, policy_job
from iot_core.settings import Settings
from iot_etl.migrate import apply_migrations, ensure_database
from tests.support.database import database_url, drop_database
from tests.support.status import failed_job

pytestmark = pytest.mark.services

#: Every policy the product manages: (job procedure, relation, config key).
MANAGED = [
    ("policy_compression", "measurements", "compress_after"),
    ("policy_compression", "raw_messages", "compress_after"),
    ("policy_retention", "measurements", "drop_after"),
    ("policy_retention", "raw_messages", "drop_after"),
    ("policy_retention", "hourly_rollups", "drop_after"),
]


def wanted(settings: Settings) -> dict[tuple[str, str], str]:
    """What the settings say each managed policy's setting is."""
    return {
        ("policy_compression", "measurements"): settings.timescale_compress_after,
        ("policy_compression", "raw_messages"): settings.timescale_compress_raw_after,
        ("policy_retention", "measurements"): f"{settings.retention_measurements_days} days",
        ("policy_retention", "raw_messages"): f"{settings.retention_raw_days} days",
        ("policy_retention", "hourly_rollups"): f"{settings.retention_rollups_days} days",
    }


def policies(url: str) -> dict[tuple[str, str], tuple[int, str] | None]:
    """(job id, its setting as an interval) of each managed policy, None where it has none."""
    found: dict[tuple[str, str], tuple[int, str] | None] = {}
    with psycopg.connect(url) as conn:
        for proc, relation, key in MANAGED:
            job = policy_job(conn, relation, proc)
            if job is None:
                found[(proc, relation)] = None
                continue
            (interval,) = conn.execute("SELECT %s::interval", (job[1][key],)).fetchone()
            found[(proc, relation)] = (job[0], interval)
    return found


def test_migrations_add_no_policy_of_their_own() -> None:
    url = database_url(f"iot_policies_{uuid.uuid4().hex[:8]}")
    ensure_database(url)
    try:
        apply_migrations(url)
        with psycopg.connect(url) as conn:
            if not has_timescaledb(conn):
                pytest.skip("not a TimescaleDB server (IOT_TEST_PG_SERVER)")
        assert set(policies(url).values()) == {None}
    finally:
        drop_database(url.rsplit("/", 1)[1])


def test_compaction_keeps_each_policy_as_the_settings_say_and_its_job_too(
    clean_db: str, settings: Settings
) -> None:
    with psycopg.connect(clean_db) as conn:
        if not has_timescaledb(conn):
            pytest.skip("not a TimescaleDB server (IOT_TEST_PG_SERVER)")
    seen = []
    for _ in range(3):
        with DagsterInstance.ephemeral() as instance:
            result = materialize([compaction], instance=instance, resources=resources_from_settings(settings))
        assert result.success
        seen.append(policies(clean_db))
        changed = result.asset_materializations_for_node("compaction")[0].metadata["policies_changed"].value
    assert changed == "none", changed  # the last compaction found every policy as the settings say
    first = seen[0]
    assert all(job is not None for job in first.values()), first
    assert seen[1] == first and seen[2] == first, seen
    settings_say = {key: job[1] for key, job in first.items() if job}
    with psycopg.connect(clean_db) as conn:
        as_intervals = {
            key: conn.execute("SELECT %s::interval", (value,)).fetchone()[0]
            for key, value in wanted(settings).items()
        }
    assert settings_say == as_intervals
    assert as_intervals[("policy_compression", "raw_messages")] == timedelta(days=2)


def test_timescale_policies_follow_the_settings(clean_db: str) -> None:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        if "raw_messages" not in hypertables(conn):
            pytest.skip("not a TimescaleDB server (IOT_TEST_PG_SERVER)")
        changed = apply_timescale_policies(conn, "raw_messages", "6 hours", "3 days", 30)
        assert any("drop after 30 days" in c for c in changed)
        assert any("compress after 3 days" in c for c in changed)
        assert apply_timescale_policies(conn, "raw_messages", "6 hours", "3 days", 30) == []
        (interval,) = conn.execute(
            "SELECT time_interval FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = 'raw_messages'"
        ).fetchone()
        assert interval == timedelta(hours=6)
        apply_timescale_policies(conn, "raw_messages", "1 day", "2 days", 90)


def run_compaction_job(settings: Settings) -> tuple[bool, dict]:
    """compaction_job in-process: (did timescale_jobs_healthy pass, its metadata)."""
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("compaction_job").execute_in_process(
            instance=instance, resources=resources_from_settings(settings)
        )
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {"timescale_jobs_healthy", "redis_memory"}
    evaluation = evaluations["timescale_jobs_healthy"]
    return evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}


def test_timescale_jobs_healthy_fails_when_a_job_has_failed(clean_db: str, settings: Settings) -> None:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        if not hypertables(conn):
            passed, metadata = run_compaction_job(settings)
            assert passed and metadata["failed_jobs"] == 0
            pytest.skip("not a TimescaleDB server (IOT_TEST_PG_SERVER): the check passes")
        with failed_job(conn):
            passed, metadata = run_compaction_job(settings)
        assert not passed
        assert metadata["failed_jobs"] >= 1
        assert "deliberate failure" in metadata["errors"]
