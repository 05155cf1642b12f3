"""`hourly_rollups`: count, min, max, avg and last numeric value per device, metric and hour of reading time.

On plain PostgreSQL it is a table that every run upserts; on TimescaleDB a continuous aggregate over
`measurements` (sql/010) that every run refreshes. Either way a run recomputes the reading hours that the
measurements arriving in its range fall in, so late readings reopen and correct their hour.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg

from dagster_project.retention import continuous_aggregates

HOUR = timedelta(hours=1)

#: The (device, metric, reading hour) of every measurement that arrived in [%(s)s, %(e)s).
_TOUCHED = """SELECT DISTINCT m.device_id, m.metric_id, date_trunc('hour', m.ts, 'UTC') AS hour
              FROM raw_messages x JOIN measurements m ON m.raw_id = x.raw_id
              WHERE x.arrived_at >= %(s)s AND x.arrived_at < %(e)s"""


def refresh_rollups(conn: psycopg.Connection, start: datetime, end: datetime) -> int:
    """Recompute the hourly rollups of every (device, metric, reading hour) that a measurement arriving
    in [start, end) falls in; returns how many rollup rows those keys have now (the rows written).

    On TimescaleDB `conn` must be in autocommit mode: a continuous aggregate's refresh cannot run inside
    a transaction block."""
    if "hourly_rollups" in continuous_aggregates(conn):
        return _refresh_aggregate(conn, start, end)
    return _upsert_table(conn, start, end)


def hour_ranges(hours: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Sorted, distinct hour starts as [start, end) ranges, consecutive hours joined into one."""
    ranges: list[tuple[datetime, datetime]] = []
    for hour in sorted(set(hours)):
        if ranges and ranges[-1][1] == hour:
            ranges[-1] = (ranges[-1][0], hour + HOUR)
        else:
            ranges.append((hour, hour + HOUR))
    return ranges


def _refresh_aggregate(conn: psycopg.Connection, start: datetime, end: datetime) -> int:
    if not conn.autocommit:
        raise psycopg.ProgrammingError(
            "hourly_rollups is a continuous aggregate: refresh it on a connection in autocommit mode"
        )
    hours = [
        hour for (hour,) in conn.execute(f"SELECT DISTINCT hour FROM ({_TOUCHED}) t", {"s": start, "e": end})
    ]
    for low, high in hour_ranges(hours):
        conn.execute("CALL refresh_continuous_aggregate('hourly_rollups', %s, %s)", (low, high))
    row = conn.execute(
        f"""SELECT count(*) FROM hourly_rollups h
            JOIN ({_TOUCHED}) t USING (device_id, metric_id, hour)""",
        {"s": start, "e": end},
    ).fetchone()
    return int(row[0]) if row else 0


def _upsert_table(conn: psycopg.Connection, start: datetime, end: datetime) -> int:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            """CREATE TEMP TABLE IF NOT EXISTS rollup_keys
                   (device_id integer, metric_id integer, hour timestamptz) ON COMMIT DROP"""
        )
        cur.execute("TRUNCATE rollup_keys")
        cur.execute(f"INSERT INTO rollup_keys {_TOUCHED}", {"s": start, "e": end})
        cur.execute(
            """INSERT INTO hourly_rollups AS h (hour, device_id, metric_id, count, min_value, max_value,
                                                avg_value, last_value, last_ts, updated_at)
               SELECT k.hour, k.device_id, k.metric_id, count(*), min(m.value_num), max(m.value_num),
                      avg(m.value_num), (array_agg(m.value_num ORDER BY m.ts DESC))[1], max(m.ts),
                      clock_timestamp()
               FROM rollup_keys k
               JOIN measurements m ON m.device_id = k.device_id AND m.metric_id = k.metric_id
                    AND m.ts >= k.hour AND m.ts < k.hour + interval '1 hour'
               WHERE m.value_num IS NOT NULL
               GROUP BY k.hour, k.device_id, k.metric_id
               ON CONFLICT (device_id, metric_id, hour) DO UPDATE
               SET count = excluded.count, min_value = excluded.min_value, max_value = excluded.max_value,
                   avg_value = excluded.avg_value, last_value = excluded.last_value,
                   last_ts = excluded.last_ts, updated_at = excluded.updated_at"""
        )
        return cur.rowcount
