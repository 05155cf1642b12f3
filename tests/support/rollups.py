"""What `hourly_rollups` must equal (the same aggregate computed from `measurements` directly), and the
dimension rows the rollup tests write readings against."""

import psycopg

#: The rollups of every numeric reading, recomputed from `measurements` (average rounded for comparison).
AGGREGATE = """SELECT device_id, metric_id, date_trunc('hour', ts, 'UTC'), count(*), min(value_num),
                      max(value_num), round(avg(value_num)::numeric, 9),
                      (array_agg(value_num ORDER BY ts DESC))[1], max(ts)
               FROM measurements WHERE value_num IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
#: `hourly_rollups` in the same columns and order.
ROLLUPS = """SELECT device_id, metric_id, hour, count, min_value, max_value, round(avg_value::numeric, 9),
                    last_value, last_ts
             FROM hourly_rollups ORDER BY 1, 2, 3"""


def device_and_metric(conn: psycopg.Connection, device_key: str, metric: str) -> tuple[int, int]:
    """The ids of a plain device and a unit-less metric, registered if new."""
    (device_id,) = conn.execute(
        "INSERT INTO devices (device_key, kind) VALUES (%s, 'plain') "
        "ON CONFLICT (device_key) DO UPDATE SET kind = 'plain' RETURNING device_id",
        (device_key,),
    ).fetchone()
    (metric_id,) = conn.execute(
        "INSERT INTO metrics (name, unit) VALUES (%s, '') "
        "ON CONFLICT (name, unit) DO UPDATE SET unit = '' RETURNING metric_id",
        (metric,),
    ).fetchone()
    return device_id, metric_id
