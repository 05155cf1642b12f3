"""The status lines about growth: stream memory and what is not archived yet, table sizes, the last
compaction, TimescaleDB's jobs and chunk skipping, and Dagster's run count. Each is (part, item, value)."""

from __future__ import annotations

import psycopg

from dagster_project.lib.compaction import unarchived_from_ms
from dagster_project.lib.storage.compactions import last_compaction, table_sizes
from iot_core.redis_client import RedisClient, streams_clock_ms
from iot_core.settings import Settings
from iot_core.streams import EntryId, utc_from_ms
from iot_etl.dagster_instance import dagster_home
from iot_etl.status_timescale import job_lines, skipping_lines

Line = tuple[str, str, str]
TABLES = ["raw_messages", "measurements", "events", "rejected", "batches"]


def megabytes(n: int) -> str:
    return f"{n / 1_048_576:.1f} MB"


def oldest_unarchived_ms(
    client: RedisClient, conn: psycopg.Connection, stream: str, until_ms: int, shard: int | None = None
) -> int | None:
    """Where the stream's entries that no archived batch covers begin (closed ranges only), if any; the
    stream of `shard` (of several) is archived by batches of that shard or of every stream."""
    first = client.xrange(stream, "-", "+", count=1)
    if not first:
        return None
    start_ms = unarchived_from_ms(client, conn, stream, EntryId.parse(first[0][0]).ms, until_ms, shard)
    return start_ms if start_ms < until_ms else None


def stream_lines(client: RedisClient, streams: list[str], settings: Settings) -> list[Line]:
    now_s = streams_clock_ms(client, streams) // 1000
    closed_ms = now_s * 1000 - settings.window_ms - settings.window_grace_ms
    lines: list[Line] = []
    try:
        conn: psycopg.Connection | None = psycopg.connect(
            settings.database_url.get_secret_value(), connect_timeout=5
        )
    except psycopg.Error:
        conn = None
    try:
        for n, stream in enumerate(streams):
            memory = int(client.memory_usage(stream) or 0)
            lines.append(("redis", stream, f"{client.xlen(stream)} entries, {megabytes(memory)}"))
            if conn is not None:
                shard = n if len(streams) > 1 else None
                oldest = oldest_unarchived_ms(client, conn, stream, closed_ms, shard)
                lines.append(
                    (
                        "redis",
                        f"{stream} oldest unarchived",
                        utc_from_ms(oldest).isoformat() if oldest else "none (all closed entries archived)",
                    )
                )
    finally:
        if conn is not None:
            conn.close()
    return lines


def compaction_lines(conn: psycopg.Connection) -> list[Line]:
    lines: list[Line] = []
    for table, size in table_sizes(conn, TABLES).items():
        lines.append(("database", f"{table} size", megabytes(size)))
    exists = conn.execute("SELECT to_regclass('compactions')").fetchone()
    last = last_compaction(conn) if exists and exists[0] else None
    lines.append(
        (
            "compaction",
            "last",
            "never"
            if last is None
            else f"{last[0]:%Y-%m-%d %H:%M:%S} UTC: {last[1]} stream entries ({megabytes(last[2])}), "
            f"{last[3]} rows, {last[4]} chunks, {last[5]} runs",
        )
    )
    return lines + job_lines(conn) + skipping_lines(conn)


def error_text(exc: BaseException) -> str:
    """`error: <the first line of what it said>`, for a status line whose part raised."""
    return f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"


def dagster_runs_line(settings: Settings) -> Line:
    """Runs in Dagster's storage (all, and micro-batch ones), when the instance has been configured."""
    home = dagster_home(settings)
    if not (home / "dagster.yaml").exists():
        return ("dagster", "runs", f"unknown (no dagster.yaml in {home})")
    try:
        from dagster import DagsterInstance, RunsFilter

        with DagsterInstance.from_config(str(home)) as instance:
            total = instance.get_runs_count()
            micro = instance.get_runs_count(RunsFilter(tags={"iot/kind": "micro"}))
        return ("dagster", "runs", f"{total} ({micro} micro-batch)")
    except Exception as exc:  # status reports every part, whatever one of them raises
        return ("dagster", "runs", error_text(exc))
