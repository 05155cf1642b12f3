-- A check that judges "the hour so far" in every micro-batch run keeps its passing verdict over
-- [hour start, end of the run's range), with the snapshot it judged in, so that the next run judges only
-- what came after. Every transaction that writes a batch's rows (landing, decoding) stamps the batch row
-- with its transaction id; a verdict holds while every batch overlapping its range was written by a
-- transaction visible in the verdict's snapshot.
ALTER TABLE batches ADD COLUMN IF NOT EXISTS written_xid xid8;

CREATE TABLE IF NOT EXISTS check_verdicts (
    check_name  text        NOT NULL,
    range_start timestamptz NOT NULL,
    range_end   timestamptz NOT NULL,
    seen        pg_snapshot NOT NULL,
    totals      jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (check_name, range_start, range_end)
);

CREATE INDEX IF NOT EXISTS batches_range_idx ON batches (range_start, range_end);
