"""`hourly_rollups`: count, min, max, avg and last numeric value per device, metric and hour of reading time.

On plain PostgreSQL it is a table that every run upserts from partial rollups per minute of arrival
(`rollup_parts`, sql/015): a run recomputes the parts of its own range's minutes and merges the parts of the
hours they touch, so its cost follows its range, not the hour so far. On TimescaleDB it is a continuous
aggregate over `measurements` (sql/010) that every run refreshes for those hours. Either way late readings
reopen and correct their hour.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg

from dagster_project.lib.raw_ids import RawIdSpan, raw_id_span
from dagster_project.lib.retention import continuous_aggregates

HOUR = timedelta(hours=1)
#: The arrival span of one part of the rollups on plain PostgreSQL (`rollup_parts`).
SLOT = timedelta(minutes=1)
#: A refresh of a longer range commits this much at a time (whole slots).
CHUNK = timedelta(minutes=5)
#: How far a reading's time may be ahead of its arrival (the decoder's sanity bound can be at most this).
MAX_AHEAD = timedelta(days=1)
#: Parts are kept this long after their minute (compaction removes older ones).
PARTS_KEPT = timedelta(days=2)
#: Hours this recent are merged from their parts: every reading of such an hour arrived at most
#: `MAX_AHEAD` before it, so within `PARTS_KEPT`.
PARTS_MERGED = PARTS_KEPT - MAX_AHEAD


def _touched(span: RawIdSpan) -> str:
    """The (device, metric, reading hour) of every measurement that arrived in the span's range."""
    return f"""SELECT DISTINCT m.device_id, m.metric_id, date_trunc('hour', m.ts, 'UTC') AS hour
               FROM measurements m WHERE {span.rows_of("m")}"""


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


def rollup_hours(conn: psycopg.Connection, start: datetime, end: datetime) -> list[datetime]:
    """The reading hours of the measurements that arrived in [start, end): the hours a refresh recomputes
    on TimescaleDB. Found by the range's raw ids, so it reads the range's rows, not the hours'."""
    return _hours(conn, raw_id_span(conn, start, end))


def _hours(conn: psycopg.Connection, span: RawIdSpan) -> list[datetime]:
    return [hour for (hour,) in conn.execute(f"SELECT DISTINCT hour FROM ({_touched(span)}) t", span.params)]


def _refresh_aggregate(conn: psycopg.Connection, start: datetime, end: datetime) -> int:
    if not conn.autocommit:
        raise psycopg.ProgrammingError(
            "hourly_rollups is a continuous aggregate: refresh it on a connection in autocommit mode"
        )
    span = raw_id_span(conn, start, end)
    hours = _hours(conn, span)
    for low, high in hour_ranges(hours):
        conn.execute("CALL refresh_continuous_aggregate('hourly_rollups', %s, %s)", (low, high))
    if not hours:
        return 0
    # bounded by the hours too: only the aggregate's chunks that hold them are read, not its history
    row = conn.execute(
        f"""SELECT count(*) FROM hourly_rollups h
            JOIN ({_touched(span)}) t USING (device_id, metric_id, hour)
            WHERE h.hour >= %(first)s AND h.hour <= %(last)s""",
        {**span.params, "first": min(hours), "last": max(hours)},
    ).fetchone()
    return int(row[0]) if row else 0


def _upsert_table(conn: psycopg.Connection, start: datetime, end: datetime) -> int:
    """Recompute the parts (`rollup_parts`) of the arrival minutes that [start, end) overlaps, then bring
    every device-metric hour they touch up to date in `hourly_rollups`: a recent hour by merging its
    parts, an older one (a reading a day late, a backfill) from its measurements. An hour left without
    numeric readings (re-decoded as text) loses its rollup row. Concurrent refreshes take turns (the parts'
    table lock), so no merge sees a half-written minute; a long range (a backfill) goes `CHUNK` at a time,
    each its own transaction, so a live run's refresh waits for one chunk at most, not for the backfill."""
    lo, hi = _minute(start), _minute(end - timedelta(microseconds=1)) + SLOT
    written: set[tuple] = set()
    while lo < hi:
        written |= _upsert_chunk(conn, lo, min(hi, lo + CHUNK))
        lo += CHUNK
    return len(written)


def _upsert_chunk(conn: psycopg.Connection, lo: datetime, hi: datetime) -> set[tuple]:
    """`_upsert_table` over whole minutes [lo, hi) in one transaction; the rollup keys it wrote."""
    with conn.transaction(), conn.cursor() as cur:
        bounds = {"lo": lo, "hi": hi}
        cur.execute(
            """CREATE TEMP TABLE IF NOT EXISTS rollup_keys
                   (device_id integer, metric_id integer, hour timestamptz) ON COMMIT DROP"""
        )
        cur.execute("TRUNCATE rollup_keys")
        cur.execute("LOCK TABLE rollup_parts IN SHARE ROW EXCLUSIVE MODE")
        cur.execute(
            """WITH gone AS (DELETE FROM rollup_parts WHERE slot >= %(lo)s AND slot < %(hi)s
                             RETURNING device_id, metric_id, hour)
               INSERT INTO rollup_keys SELECT * FROM gone""",
            bounds,
        )
        slot = lo
        while slot < hi:  # a part per arrival minute, each read by its own raw-id span
            span = raw_id_span(conn, slot, slot + SLOT)
            cur.execute(
                f"""WITH made AS (
                       INSERT INTO rollup_parts (slot, device_id, metric_id, hour, count, min_value,
                                                 max_value, sum_value, last_value, last_ts)
                       SELECT %(s)s, m.device_id, m.metric_id, date_trunc('hour', m.ts, 'UTC'), count(*),
                              min(m.value_num), max(m.value_num), sum(m.value_num),
                              (array_agg(m.value_num ORDER BY m.ts DESC))[1], max(m.ts)
                       FROM measurements m
                       WHERE {span.rows_of("m")} AND m.value_num IS NOT NULL
                       GROUP BY 2, 3, 4
                       RETURNING device_id, metric_id, hour)
                   INSERT INTO rollup_keys SELECT * FROM made""",
                span.params,
            )
            slot += SLOT
        cur.execute(
            f"""WITH fresh AS ({_FRESH}),
                    emptied AS (
                        DELETE FROM hourly_rollups h USING rollup_keys k
                        WHERE h.device_id = k.device_id AND h.metric_id = k.metric_id AND h.hour = k.hour
                          AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.device_id = k.device_id
                                          AND f.metric_id = k.metric_id AND f.hour = k.hour))
                INSERT INTO hourly_rollups AS h (hour, device_id, metric_id, count, min_value, max_value,
                                                 avg_value, last_value, last_ts, updated_at)
                SELECT hour, device_id, metric_id, count, min_value, max_value, avg_value, last_value,
                       last_ts, clock_timestamp()
                FROM fresh
                ON CONFLICT (device_id, metric_id, hour) DO UPDATE
                SET count = excluded.count, min_value = excluded.min_value, max_value = excluded.max_value,
                    avg_value = excluded.avg_value, last_value = excluded.last_value,
                    last_ts = excluded.last_ts, updated_at = excluded.updated_at
                RETURNING device_id, metric_id, hour""",
            {"merged": PARTS_MERGED},
        )
        return set(cur.fetchall())


#: The rollups of the hours in `rollup_keys`: merged from their parts for an hour of the last
#: `PARTS_MERGED`, whose readings all arrived while parts are kept (a reading's time is at most
#: `MAX_AHEAD` ahead of its arrival); recomputed from the measurements for an older one.
_FRESH = """
    WITH keys AS (SELECT DISTINCT device_id, metric_id, hour FROM rollup_keys),
         recent AS (SELECT * FROM keys WHERE hour >= now() - %(merged)s::interval),
         older AS (SELECT * FROM keys WHERE hour < now() - %(merged)s::interval)
    SELECT p.hour, p.device_id, p.metric_id, sum(p.count)::bigint AS count, min(p.min_value) AS min_value,
           max(p.max_value) AS max_value, sum(p.sum_value) / sum(p.count) AS avg_value,
           (array_agg(p.last_value ORDER BY p.last_ts DESC))[1] AS last_value, max(p.last_ts) AS last_ts
    FROM recent k JOIN rollup_parts p USING (device_id, metric_id, hour)
    GROUP BY p.hour, p.device_id, p.metric_id
    UNION ALL
    SELECT k.hour, k.device_id, k.metric_id, count(*), min(m.value_num), max(m.value_num), avg(m.value_num),
           (array_agg(m.value_num ORDER BY m.ts DESC))[1], max(m.ts)
    FROM older k
    JOIN measurements m ON m.device_id = k.device_id AND m.metric_id = k.metric_id
         AND m.ts >= k.hour AND m.ts < k.hour + interval '1 hour'
    WHERE m.value_num IS NOT NULL
    GROUP BY k.hour, k.device_id, k.metric_id"""


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def recompute_keys(conn: psycopg.Connection, keys: list[tuple[int, int, datetime]]) -> None:
    """Recompute the rollups of these (device, metric, reading hour) keys from their readings, where
    `hourly_rollups` is a table. A run brings up to date the keys its own readings touch, so a key whose
    readings were deleted, not written (a message re-processed under another metric), would keep its old
    counts; a continuous aggregate needs nothing, the run refreshes every key of the hours it touches."""
    if not keys or "hourly_rollups" in continuous_aggregates(conn):
        return
    devices, metrics, hours = (list(column) for column in zip(*keys, strict=True))
    conn.execute(
        """WITH keys AS (SELECT DISTINCT * FROM unnest(%s::integer[], %s::integer[], %s::timestamptz[])
                         AS k (device_id, metric_id, hour)),
                fresh AS (
                    SELECT k.hour, k.device_id, k.metric_id, count(*) AS count, min(m.value_num) AS min_value,
                           max(m.value_num) AS max_value, avg(m.value_num) AS avg_value,
                           (array_agg(m.value_num ORDER BY m.ts DESC))[1] AS last_value, max(m.ts) AS last_ts
                    FROM keys k
                    JOIN measurements m ON m.device_id = k.device_id AND m.metric_id = k.metric_id
                         AND m.ts >= k.hour AND m.ts < k.hour + interval '1 hour'
                    WHERE m.value_num IS NOT NULL
                    GROUP BY k.hour, k.device_id, k.metric_id),
                emptied AS (
                    DELETE FROM hourly_rollups h USING keys k
                    WHERE h.device_id = k.device_id AND h.metric_id = k.metric_id AND h.hour = k.hour
                      AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.device_id = k.device_id
                                      AND f.metric_id = k.metric_id AND f.hour = k.hour))
           INSERT INTO hourly_rollups (hour, device_id, metric_id, count, min_value, max_value, avg_value,
                                       last_value, last_ts, updated_at)
           SELECT *, clock_timestamp() FROM fresh
           ON CONFLICT (device_id, metric_id, hour) DO UPDATE
           SET count = excluded.count, min_value = excluded.min_value, max_value = excluded.max_value,
               avg_value = excluded.avg_value, last_value = excluded.last_value, last_ts = excluded.last_ts,
               updated_at = excluded.updated_at""",
        (devices, metrics, hours),
    )
