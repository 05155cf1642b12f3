-- The stream shard a batch read (0..IOT_STREAM_SHARDS-1) when each shard's windows are processed by runs
-- of their own; NULL for a batch that read every stream (one stream, backfills, runs from the UI, and
-- batches written before this column existed). A range counts as archived for shard n where a batch of
-- shard n or of every stream covers it: the sensor, the archive check and compaction look per shard.
ALTER TABLE batches ADD COLUMN IF NOT EXISTS shard integer;
CREATE INDEX IF NOT EXISTS batches_shard_end_idx ON batches (shard, range_end) WHERE landed_at IS NOT NULL;
