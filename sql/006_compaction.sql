-- Compaction (the `compaction` asset): what each run did, and which closed hours already have their one
-- summary materialization in Dagster (written before the hour's micro-batch runs are deleted).
CREATE TABLE compactions (
    compaction_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          text        NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    stream_entries_trimmed bigint NOT NULL DEFAULT 0,
    stream_bytes_freed     bigint NOT NULL DEFAULT 0,
    rows_deleted    bigint      NOT NULL DEFAULT 0,
    chunks_dropped  integer     NOT NULL DEFAULT 0,
    runs_deleted    integer     NOT NULL DEFAULT 0,
    hours_summarised integer    NOT NULL DEFAULT 0,
    details         jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX compactions_finished_idx ON compactions (finished_at DESC);

CREATE TABLE summarised_hours (
    partition_key   text        PRIMARY KEY,
    summarised_at   timestamptz NOT NULL DEFAULT now()
);

-- Retention deletes in index order of the age column: each table needs an index that starts with it.
CREATE INDEX events_ts_server_idx ON events (ts_server);
CREATE INDEX batches_range_end_idx ON batches (range_end);
