-- TimescaleDB where the server has the extension: hypertables with compression.
-- On plain PostgreSQL this migration records itself and changes nothing: same tables, same SQL API.
-- `events` stays a plain table: its idempotency key (device, event_id) has no time column.
-- Whether the server preloads the extension is told by its loader's settings, which every session of a
-- preloading server defines and any role may read; `shared_preload_libraries` itself only a superuser
-- or a member of pg_read_all_settings may read, which a schema owner need not be.
-- No policies here: compaction makes the compression and retention policies those of the settings
-- (IOT_TIMESCALE_COMPRESS_*, IOT_RETENTION_*), so that each has one source.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        RAISE NOTICE 'timescaledb not available: keeping plain PostgreSQL tables';
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
       AND NOT EXISTS (SELECT 1 FROM pg_settings WHERE name = 'timescaledb.disable_load') THEN
        RAISE WARNING 'timescaledb is installed but not preloaded: keeping plain PostgreSQL tables. '
            'To use it, add timescaledb to shared_preload_libraries in postgresql.conf and restart the server.';
        RETURN;
    END IF;
    CREATE EXTENSION IF NOT EXISTS timescaledb;
    PERFORM create_hypertable('measurements', 'ts', chunk_time_interval => interval '1 day',
                              migrate_data => true);
    PERFORM create_hypertable('raw_messages', 'arrived_at', chunk_time_interval => interval '1 day',
                              migrate_data => true);
    EXECUTE 'ALTER TABLE measurements SET (timescaledb.compress, '
            'timescaledb.compress_segmentby = ''device_id, metric_id'', timescaledb.compress_orderby = ''ts DESC'')';
    EXECUTE 'ALTER TABLE raw_messages SET (timescaledb.compress, timescaledb.compress_orderby = ''arrived_at'')';
END
$$;
