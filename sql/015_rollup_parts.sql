-- Partial hourly rollups per minute of arrival: a run recomputes the parts of the arrival minutes its
-- range overlaps (reading only what arrived then) and merges the parts of the device-metric hours they
-- touch into `hourly_rollups`, instead of re-reading every reading of those hours (hours of the last
-- day; older ones are recomputed from their readings, and parts older than two days are removed). A run
-- late in a busy hour then costs what its own range holds, not what the hour holds so far. `sum_value`
-- makes the merged average exact up to rounding. Unused where `hourly_rollups` is a continuous aggregate (TimescaleDB).
CREATE TABLE IF NOT EXISTS rollup_parts (
    slot        timestamptz      NOT NULL,  -- the minute of arrival
    device_id   integer          NOT NULL,
    metric_id   integer          NOT NULL,
    hour        timestamptz      NOT NULL,  -- the hour of reading time
    count       bigint           NOT NULL,
    min_value   double precision NOT NULL,
    max_value   double precision NOT NULL,
    sum_value   double precision NOT NULL,
    last_value  double precision NOT NULL,
    last_ts     timestamptz      NOT NULL,
    PRIMARY KEY (slot, device_id, metric_id, hour)
);
CREATE INDEX IF NOT EXISTS rollup_parts_key_idx ON rollup_parts (device_id, metric_id, hour);

-- The parts of what arrived in the last two days (parts are kept that long), so that merging them gives
-- the rollups of the hours that are merged rather than recomputed.
DO $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = to_regclass('hourly_rollups')) = 'r' THEN
        INSERT INTO rollup_parts
        SELECT date_trunc('minute', m.arrived_at), m.device_id, m.metric_id, date_trunc('hour', m.ts, 'UTC'),
               count(*), min(m.value_num), max(m.value_num), sum(m.value_num),
               (array_agg(m.value_num ORDER BY m.ts DESC))[1], max(m.ts)
        FROM measurements m
        WHERE m.value_num IS NOT NULL AND m.arrived_at >= now() - interval '2 days'
        GROUP BY 1, 2, 3, 4
        ON CONFLICT DO NOTHING;
    END IF;
END $$;
