-- Data quality: plausible value ranges per metric (editable; seeded for the simulator's metrics), each
-- device's last-seen time, a view that flags implausible readings (the rows stay in `measurements`), and
-- the hourly rollups table that the `hourly_rollups` asset keeps current.

-- A range applies to every metric with this name and unit, including metrics first seen later.
-- NULL bound: unbounded on that side.
CREATE TABLE metric_ranges (
    name        text NOT NULL,
    unit        text NOT NULL DEFAULT '',
    min_value   double precision,
    max_value   double precision,
    note        text NOT NULL DEFAULT '',
    PRIMARY KEY (name, unit),
    CHECK (min_value IS NULL OR max_value IS NULL OR min_value <= max_value)
);

INSERT INTO metric_ranges (name, unit, min_value, max_value, note) VALUES
    -- plain metrics (devices/{id}/{metric})
    ('temperature', '°C', -40, 85, 'indoor/outdoor air sensor'),
    ('temperature', 'C', -40, 85, 'indoor/outdoor air sensor'),
    ('humidity', '%', 0, 100, 'relative humidity'),
    ('pressure', 'hPa', 870, 1085, 'sea-level air pressure records'),
    ('heart_rate', 'bpm', 25, 250, 'human heart rate'),
    ('battery', '%', 0, 100, 'charge level'),
    ('relay', '', 0, 1, 'boolean stored as 1/0'),
    ('temperature', '', -40, 85, 'sent without a unit'),
    ('humidity', '', 0, 100, 'sent without a unit'),
    ('pressure', '', 870, 1085, 'sent without a unit'),
    ('heart_rate', '', 25, 250, 'sent without a unit'),
    ('battery', '', 0, 100, 'sent without a unit'),
    -- F2 datapoints (port.component.datapoint)
    ('J1.sensor-1.temperature', '°C', -40, 85, 'th-sensor'),
    ('J1.sensor-1.humidity', '%RH', 0, 100, 'th-sensor'),
    ('J3.sensor-1.voltage', 'V', 180, 260, 'power meter, 230 V mains'),
    ('J3.sensor-1.current', 'A', 0, 32, 'power meter'),
    ('J3.sensor-1.active_power', 'W', -8000, 8000, 'power meter, negative: export'),
    ('J4.sensor-2.co2', 'ppm', 250, 10000, 'co2-sensor'),
    ('J4.sensor-2.temperature', '°C', -40, 85, 'co2-sensor')
ON CONFLICT (name, unit) DO NOTHING;

-- Readings outside their metric's range: kept, flagged here.
CREATE VIEW implausible_measurements AS
SELECT m.*, mt.name AS metric, mt.unit, r.min_value, r.max_value
FROM measurements m
JOIN metrics mt USING (metric_id)
JOIN metric_ranges r ON r.name = mt.name AND r.unit = mt.unit
WHERE m.value_num < r.min_value OR m.value_num > r.max_value;

-- The arrival time of the newest message a device sent that became a fact row (NULL: never).
ALTER TABLE devices ADD COLUMN last_seen timestamptz;
UPDATE devices d SET last_seen = s.last_seen
FROM (SELECT device_id, max(arrived_at) AS last_seen FROM measurements GROUP BY device_id
      UNION ALL
      SELECT device_id, max(ts_server) FROM events GROUP BY device_id) s
WHERE s.device_id = d.device_id AND (d.last_seen IS NULL OR d.last_seen < s.last_seen);
CREATE INDEX devices_last_seen_idx ON devices (last_seen);

-- Hourly rollups of numeric readings, by reading time (ts): the `hourly_rollups` asset upserts the
-- hours its telemetry touched. `last_value` is the value of the newest reading of the hour.
CREATE TABLE hourly_rollups (
    hour        timestamptz      NOT NULL,
    device_id   integer          NOT NULL REFERENCES devices (device_id),
    metric_id   integer          NOT NULL REFERENCES metrics (metric_id),
    count       bigint           NOT NULL,
    min_value   double precision,
    max_value   double precision,
    avg_value   double precision,
    last_value  double precision,
    last_ts     timestamptz      NOT NULL,
    updated_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, metric_id, hour)
);
CREATE INDEX hourly_rollups_hour_idx ON hourly_rollups (hour);
