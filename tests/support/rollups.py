"""What `hourly_rollups` must equal: the same aggregate computed from `measurements` directly."""

#: The rollups of every numeric reading, recomputed from `measurements` (average rounded for comparison).
AGGREGATE = """SELECT device_id, metric_id, date_trunc('hour', ts, 'UTC'), count(*), min(value_num),
                      max(value_num), round(avg(value_num)::numeric, 9),
                      (array_agg(value_num ORDER BY ts DESC))[1], max(ts)
               FROM measurements WHERE value_num IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
#: `hourly_rollups` in the same columns and order.
ROLLUPS = """SELECT device_id, metric_id, hour, count, min_value, max_value, round(avg_value::numeric, 9),
                    last_value, last_ts
             FROM hourly_rollups ORDER BY 1, 2, 3"""
