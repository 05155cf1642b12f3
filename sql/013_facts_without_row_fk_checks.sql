-- The fact tables' device and metric ids are looked up (or registered) in `devices` and `metrics` by the
-- same transaction that stores the facts, and neither dimension table has rows deleted; the foreign keys
-- repeated that guarantee with one trigger query per stored row (two per measurement), about half the
-- server time of storing a batch of measurements. The ids are checked once per batch instead
-- (storage.device_ids/metric_ids read back every id they hand out).
ALTER TABLE measurements DROP CONSTRAINT IF EXISTS measurements_device_id_fkey;
ALTER TABLE measurements DROP CONSTRAINT IF EXISTS measurements_metric_id_fkey;
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_device_id_fkey;
