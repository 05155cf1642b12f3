-- When the oldest message of a batch's range arrived (the earliest stream entry it read): a window's lag is
-- the age of that message when the batch finished, `finished_at - oldest_arrival`, which is what a person
-- waiting for the data sees; `finished_at - range_end` understates it for a run that took several windows
-- at once. NULL for a batch that read no entry, and for batches written before this column existed.
ALTER TABLE batches ADD COLUMN IF NOT EXISTS oldest_arrival timestamptz;

-- The backfill whose run wrote the batch (Dagster's backfill id; NULL for the sensor's runs and runs from the
-- UI): a check verdict that only backfills have voided is still read on from by live runs, provisionally,
-- while the backfill's own runs judge the hour whole (dagster_project/lib/verdicts.py).
ALTER TABLE batches ADD COLUMN IF NOT EXISTS backfill text;
