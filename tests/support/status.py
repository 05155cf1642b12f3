"""What `iot-etl status` exits with on the suite's server: 0 when every part answers, unless a TimescaleDB
background job of the database failed its last run; then 1, naming the jobs. (On a server where every
background job fails, as TimescaleDB 2.28.3 on PostgreSQL 15.20 does, that is every database that has
jobs.) A job's last run changes only when it runs, so the jobs are read before and after status, and status
runs again when a job ran meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg

from dagster_project.lib.timescale_jobs import timescale_failed_jobs

R = TypeVar("R")


def failed_jobs(url: str) -> list[str]:
    """The status items (`job <id> <procedure>[ <table>]`) of the database's failed jobs."""
    with psycopg.connect(url) as conn:
        return [
            f"job {job.job_id} {job.proc_name}" + (f" {job.table}" if job.table else "")
            for job in timescale_failed_jobs(conn)
        ]


def settled(run: Callable[[], R], url: str) -> tuple[R, list[str]]:
    """`run()`'s result (a status run) and the jobs that had failed while it ran."""
    for _ in range(3):
        before = failed_jobs(url)
        result = run()
        if failed_jobs(url) == before:
            return result, before
    raise AssertionError("TimescaleDB's jobs kept changing while status ran")


def assert_exit(code: int, errors: str, failed: list[str]) -> None:
    """`status` exited 0 without failed jobs, else 1 with one error line naming them."""
    if not failed:
        assert code == 0, errors
        return
    assert code == 1, errors
    assert f"{len(failed)} TimescaleDB job(s) failed their last run ({', '.join(failed)})" in errors, errors


@contextmanager
def failed_job(conn: psycopg.Connection, wait_s: float = 240) -> Iterator[int]:
    """A job of the database (`conn` in autocommit mode) whose last run failed, deliberately: its id, once
    TimescaleDB's scheduler has run it; deleted afterwards."""
    conn.execute(
        """CREATE OR REPLACE PROCEDURE test_failing_job(job_id int, config jsonb) LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'deliberate failure for the health check'; END $$"""
    )
    (job_id,) = conn.execute(
        "SELECT add_job('test_failing_job', interval '1 hour', initial_start => now())"
    ).fetchone() or (0,)
    try:
        deadline = time.monotonic() + wait_s
        while not any(j.job_id == job_id for j in timescale_failed_jobs(conn)):
            assert time.monotonic() < deadline, "the background scheduler never ran the job"
            time.sleep(2)
        yield job_id
    finally:
        conn.execute("SELECT delete_job(%s)", (job_id,))
