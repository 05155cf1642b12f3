-- When this installation started: its partition grid begins at that hour (dagster_project.defs.partitions reads
-- it when the definitions are built; IOT_PARTITIONS_START overrides it). One row, written where missing:
-- the hour of the earliest archived message when there is one (a database that holds data already), else
-- the hour this migration runs.
CREATE TABLE installation (
    one        boolean     PRIMARY KEY DEFAULT true CHECK (one),  -- at most one row
    started_at timestamptz NOT NULL
);
INSERT INTO installation (started_at)
SELECT date_trunc('hour', coalesce(min(arrived_at), now()), 'UTC') FROM raw_messages
ON CONFLICT (one) DO NOTHING;
