"""The status lines about TimescaleDB: every background job with its last run (a failed one makes `status`
exit non-zero), and whether a run's look-ups by raw id skip the compressed history. Each is
(part, item, value); none without TimescaleDB."""

from __future__ import annotations

import psycopg

from dagster_project.lib.chunks import (
    SKIPPING,
    SkippingState,
    raw_id_hypertables,
    skipping_on,
    skipping_state,
    skipping_supported,
    turn_on_instructions,
)
from dagster_project.lib.retention import has_timescaledb
from dagster_project.lib.timescale_jobs import timescale_jobs

Line = tuple[str, str, str]
PART = "timescaledb"
#: How a failed job's line begins (`TimescaleJob.describe`), which `status` exits non-zero for.
FAILED = "FAILED"


def job_lines(conn: psycopg.Connection) -> list[Line]:
    """One line per background job: how its last run went and when it runs next."""
    return [
        (PART, f"job {job.job_id} {job.proc_name}" + (f" {job.table}" if job.table else ""), job.describe())
        for job in timescale_jobs(conn)
    ]


def failed_job_items(lines: list[tuple[str, str, str]]) -> list[str]:
    """The items of the job lines that say the job's last run failed."""
    return [item for part, item, value in lines if part == PART and value.startswith(FAILED)]


def skipping_lines(conn: psycopg.Connection) -> list[Line]:
    """Whether look-ups by raw id leave out compressed chunks, and per hypertable how many compressed
    chunks they still read (each of those is decompressed by every run)."""
    if not has_timescaledb(conn):
        return []
    tables = raw_id_hypertables(conn)
    if not skipping_supported(conn):
        return [(PART, "chunk skipping", "not available (TimescaleDB before 2.16): " + _READ_ALL)]
    if not skipping_on(conn):
        state = "off for this database" if tables else "off"
        return [(PART, "chunk skipping", f"{state} ({SKIPPING}): {_READ_ALL}; {turn_on_instructions(conn)}")]
    return [(PART, "chunk skipping", "on")] + [
        (PART, f"{table} chunks", _chunks_value(skipping_state(conn, table))) for table in tables
    ]


def _chunks_value(state: SkippingState) -> str:
    if not state.tracked:
        return f"{state.compressed} compressed, raw ids not tracked: {_READ_ALL}; run `iot-etl db migrate`"
    if not state.compressed:
        return "none compressed yet"
    if not state.without_range:
        return f"{state.compressed} compressed, all left out by look-ups by raw id"
    why = []
    if state.partial:
        why.append(f"{state.partial} written to since: compaction compresses them again")
    if state.without_range > state.partial:
        why.append(
            f"{state.without_range - state.partial} compressed before chunk skipping: see docs/upgrading.md"
        )
    read = f"{state.without_range} read by every look-up by raw id"
    return f"{state.compressed} compressed, {read} ({'; '.join(why)})"


_READ_ALL = "every run's look-ups by raw id decompress every compressed chunk"
