"""TimescaleDB's background jobs (compression, retention and its own), as status and the health check show
them: every job with its last run, and which of them failed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from dagster_project.lib.retention import has_timescaledb

#: What a job's failed run says where its message cannot be read: `job_errors` shows a run's error only
#: to the database's owner and the job's owner, not to the writer that `status` connects as.
UNREAD_ERROR = (
    "last run failed (its message is shown to the database's owner: timescaledb_information.job_errors)"
)


@dataclass(frozen=True, slots=True)
class TimescaleJob:
    job_id: int
    proc_name: str
    table: str  # the hypertable or continuous aggregate it works on ('' for TimescaleDB's own jobs)
    last_status: str | None  # 'Success', 'Failed', or None before its first run
    last_started: datetime | None
    last_finished: datetime | None  # of the last failed run when it failed, else of the last success
    next_start: datetime | None
    error: str | None  # the failed last run's message

    @property
    def failed(self) -> bool:
        return self.last_status == "Failed"

    def describe(self) -> str:
        """One line: how its last run went and when it runs next."""
        then = f"next {self.next_start:%Y-%m-%d %H:%M} UTC" if self.next_start else "not scheduled"
        if self.failed:
            at = f" at {self.last_finished:%Y-%m-%d %H:%M} UTC" if self.last_finished else ""
            return f"FAILED{at}: {self.error or UNREAD_ERROR} ({then})"
        if self.last_status is None:
            return f"not run yet ({then})"
        started = f"{self.last_started:%Y-%m-%d %H:%M} UTC" if self.last_started else "unknown"
        return f"{self.last_status.lower()}, last run {started} ({then})"


def timescale_jobs(conn: psycopg.Connection) -> list[TimescaleJob]:
    """Every background job of the database, by id ([] without TimescaleDB). The jobs view names a
    continuous aggregate's policies by the aggregate (2.20 on) or by its materialization hypertable
    (before): either way the aggregate's name is shown. A job that never ran has `-infinity` times, which
    Python cannot hold (nor `infinity`): they are None."""
    if not has_timescaledb(conn):
        return []
    rows = conn.execute(
        f"""SELECT j.job_id, j.proc_name, coalesce(c.view_name, j.hypertable_name, ''), s.last_run_status,
                  {_finite("s.last_run_started_at")},
                  {_finite(_LAST_FINISHED)},
                  {_finite("s.next_start")}, e.err_message
           FROM timescaledb_information.jobs j
           LEFT JOIN timescaledb_information.job_stats s USING (job_id)
           LEFT JOIN timescaledb_information.continuous_aggregates c
                  ON c.materialization_hypertable_schema = j.hypertable_schema
                 AND c.materialization_hypertable_name = j.hypertable_name
           LEFT JOIN LATERAL (SELECT finish_time, err_message FROM timescaledb_information.job_errors x
                              WHERE x.job_id = j.job_id ORDER BY finish_time DESC LIMIT 1) e
                  ON s.last_run_status = 'Failed'
           ORDER BY j.job_id"""
    ).fetchall()
    return [TimescaleJob(*row) for row in rows]


#: When the last run finished: the failed run's end when it failed, else the last success's.
_LAST_FINISHED = "CASE WHEN s.last_run_status = 'Failed' THEN e.finish_time ELSE s.last_successful_finish END"


def _finite(expression: str) -> str:
    return f"CASE WHEN isfinite({expression}) THEN {expression} END"


def timescale_failed_jobs(conn: psycopg.Connection) -> list[TimescaleJob]:
    """The jobs (compression, retention, ...) whose last run failed, with their latest error."""
    return [job for job in timescale_jobs(conn) if job.failed]
