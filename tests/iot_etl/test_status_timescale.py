"""`iot-etl status` lists every TimescaleDB background job with its last run, healthy ones too, and exits
non-zero when one failed its last run, naming it; it says whether the look-ups by raw id leave compressed
chunks out."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from click.testing import CliRunner

from dagster_project.lib.chunks import skipping_supported
from dagster_project.lib.retention import has_timescaledb
from dagster_project.lib.timescale_jobs import UNREAD_ERROR, TimescaleJob
from iot_etl.cli import main
from tests.support.status import failed_job, failed_jobs

AT = datetime(2026, 12, 7, 10, 30, tzinfo=UTC)
NEXT = datetime(2026, 12, 8, 10, 30, tzinfo=UTC)


def job(status: str | None, error: str | None = None) -> TimescaleJob:
    return TimescaleJob(1000, "policy_compression", "measurements", status, AT, AT, NEXT, error)


def test_a_jobs_line_says_how_its_last_run_went_and_when_it_runs_next() -> None:
    assert job("Success").describe() == "success, last run 2026-12-07 10:30 UTC (next 2026-12-08 10:30 UTC)"
    assert job(None).describe() == "not run yet (next 2026-12-08 10:30 UTC)"
    assert (
        job("Failed", "boom").describe() == "FAILED at 2026-12-07 10:30 UTC: boom (next 2026-12-08 10:30 UTC)"
    )
    assert job("Failed").describe().endswith(f"{UNREAD_ERROR} (next 2026-12-08 10:30 UTC)")


@pytest.mark.services
def test_status_lists_healthy_jobs_and_fails_naming_the_failed_one(clean_db: str) -> None:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        if not has_timescaledb(conn):
            pytest.skip("not a TimescaleDB server (IOT_TEST_PG_SERVER)")
        conn.execute(
            """CREATE OR REPLACE PROCEDURE test_idle_job(job_id int, config jsonb) LANGUAGE plpgsql AS
               $$ BEGIN END $$"""
        )
        (idle,) = conn.execute(
            "SELECT add_job('test_idle_job', interval '1 day', initial_start => now() + interval '1 day')"
        ).fetchone()
        try:
            with failed_job(conn) as failing:
                result = CliRunner().invoke(main, ["status"])
                failed = failed_jobs(clean_db)
        finally:
            conn.execute("SELECT delete_job(%s)", (idle,))
    assert result.exit_code == 1, result.output
    lines = {line.split("  ")[0].strip(): line for line in result.output.splitlines()}
    assert "deliberate failure" in lines[f"timescaledb job {failing} test_failing_job"]
    assert "FAILED at " in lines[f"timescaledb job {failing} test_failing_job"]
    assert "not run yet (next " in lines[f"timescaledb job {idle} test_idle_job"]
    assert f"job {failing} test_failing_job" in failed
    assert f"{len(failed)} TimescaleDB job(s) failed their last run (" in result.output
    with psycopg.connect(clean_db) as conn:
        if skipping_supported(conn):
            assert lines["timescaledb chunk skipping"].endswith(" on")
            assert "timescaledb measurements chunks" in lines
