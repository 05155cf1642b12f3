-- TimescaleDB where the server has the extension: hypertables, compression, retention.
-- On plain PostgreSQL this migration records itself and changes nothing: same tables, same SQL API.
-- `events` stays a plain table: its idempotency key (device, event_id) has no time column.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        RAISE NOTICE 'timescaledb not available: keeping plain PostgreSQL tables';
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
       AND current_setting('shared_preload_libraries') NOT LIKE '%timescaledb%' THEN
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
    PERFORM add_compression_policy('measurements', interval '7 days');
    EXECUTE 'ALTER TABLE raw_messages SET (timescaledb.compress, timescaledb.compress_orderby = ''arrived_at'')';
    PERFORM add_compression_policy('raw_messages', interval '2 days');
    PERFORM add_retention_policy('raw_messages', interval '90 days');
END
$$;
