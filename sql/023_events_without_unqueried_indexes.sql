-- Two indexes of `events` that no query of the product reads: none filters or orders events by their
-- device time (`ts_device`) or by their type (`event_type`); the dashboards, checks, hour counts, lineage
-- and retention find events by arrival (`ts_server`, `device_id, ts_server`), by raw id or by their key.
-- Each cost every stored event an index insertion: together about a quarter of the server time of
-- COPYing an event. An own query that needs one can create it again, e.g.
-- CREATE INDEX events_type_ts_idx ON events (event_type, ts_server).
DROP INDEX IF EXISTS events_ts_device_idx;
DROP INDEX IF EXISTS events_type_ts_idx;
