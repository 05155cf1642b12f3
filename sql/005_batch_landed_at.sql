-- When a batch's range was archived into raw_messages (NULL: not archived by this batch). The archive
-- check and the sensor's catch-up look for closed ranges without an archived batch.
ALTER TABLE batches ADD COLUMN landed_at timestamptz;
UPDATE batches SET landed_at = finished_at WHERE raw_count > 0 AND finished_at IS NOT NULL;
CREATE INDEX batches_landed_idx ON batches (range_end) WHERE landed_at IS NOT NULL;
