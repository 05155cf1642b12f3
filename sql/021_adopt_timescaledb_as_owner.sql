-- `iot_adopt_timescaledb()` (010) as a schema owner that is no superuser can run it, leaving the policies
-- to the settings.
--
-- 010's function read `shared_preload_libraries` to tell whether the server preloads TimescaleDB; only a
-- superuser or a member of pg_read_all_settings may read it, so `db migrate` as a plain owner failed on
-- a server that has the extension. The loader of a preloading server defines its settings in every
-- session, and `pg_settings` shows them to any role: their presence is the test now (as in 004).
-- It no longer adds compression policies either: compaction makes the compression and retention
-- policies those of the settings (IOT_TIMESCALE_COMPRESS_*, IOT_RETENTION_*), so that each has one
-- source; a fixed policy here was replaced by the first compaction anyway.
-- Otherwise the same: `db migrate` calls it after the migrations, every time; it does what is missing
-- and nothing else, in one transaction, and returns one line per change (or why it changed nothing).
CREATE OR REPLACE FUNCTION iot_adopt_timescaledb() RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    moved bigint;
    t record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
            RETURN;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_settings WHERE name = 'timescaledb.disable_load') THEN
            RETURN NEXT 'installed but not preloaded: the tables stay plain PostgreSQL tables. '
                'To use it, add timescaledb to shared_preload_libraries in postgresql.conf, restart the '
                'server and run `iot-etl db migrate` again';
            RETURN;
        END IF;
        CREATE EXTENSION timescaledb;
        RETURN NEXT 'extension created';
    END IF;

    -- The primary keys, (device_id, metric_id, ts) and (arrived_at, stream, entry_ms, entry_seq), hold
    -- the time column, as a hypertable's unique indexes must; the other indexes are not unique.
    FOR t IN SELECT * FROM (VALUES
            ('measurements', 'ts', 'timescaledb.compress_segmentby = ''device_id, metric_id'', '
                                   'timescaledb.compress_orderby = ''ts DESC'''),
            ('raw_messages', 'arrived_at', 'timescaledb.compress_orderby = ''arrived_at''')
        ) AS v (name, time_column, compression)
    LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                              WHERE hypertable_schema = current_schema() AND hypertable_name = t.name);
        EXECUTE format('SELECT count(*) FROM %I', t.name) INTO moved;
        PERFORM create_hypertable(t.name::regclass, t.time_column::name,
                                  chunk_time_interval => interval '1 day', migrate_data => true);
        EXECUTE format('ALTER TABLE %I SET (timescaledb.compress, %s)', t.name, t.compression);
        RETURN NEXT format('%s: converted to a hypertable (%s rows moved into chunks)', t.name, moved);
    END LOOP;

    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates
                   WHERE view_schema = current_schema() AND view_name = 'hourly_rollups') THEN
        -- Rows of the plain table are kept under another name when there are any: their hours may lie
        -- before the oldest measurement still kept, where the aggregate cannot recompute them.
        IF to_regclass('hourly_rollups') IS NOT NULL THEN
            IF EXISTS (SELECT 1 FROM hourly_rollups) THEN
                ALTER TABLE hourly_rollups RENAME TO hourly_rollups_plain;
                ALTER INDEX hourly_rollups_hour_idx RENAME TO hourly_rollups_plain_hour_idx;
                RETURN NEXT 'hourly_rollups: the plain table''s rows are kept in hourly_rollups_plain '
                    '(drop it once they are no longer needed)';
            ELSE
                DROP TABLE hourly_rollups;
            END IF;
        END IF;
        -- The same columns as the plain table but `updated_at` (an aggregate cannot hold the time it was
        -- refreshed); last() of the reading time: (device_id, metric_id, ts) is unique, so no ties.
        EXECUTE $view$
            CREATE MATERIALIZED VIEW hourly_rollups
            WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
            SELECT time_bucket(interval '1 hour', ts) AS hour, device_id, metric_id,
                   count(*) AS count, min(value_num) AS min_value, max(value_num) AS max_value,
                   avg(value_num) AS avg_value, last(value_num, ts) AS last_value, max(ts) AS last_ts
            FROM measurements
            WHERE value_num IS NOT NULL
            GROUP BY time_bucket(interval '1 hour', ts), device_id, metric_id
            WITH NO DATA
        $view$;
        RETURN NEXT 'hourly_rollups: now a continuous aggregate over measurements';
    END IF;
END
$$;
