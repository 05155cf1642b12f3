-- Element-level accounting: how many elements the decoder found in each raw message (an event array's
-- elements; the readings of a plain or F2 message; 1 for a message rejected as a whole). Reconciliation
-- then checks that facts + rejections of each message add up to exactly that many.
CREATE TABLE raw_elements (
    raw_id      bigint      PRIMARY KEY,
    elements    integer     NOT NULL CHECK (elements >= 1),
    arrived_at  timestamptz NOT NULL,
    batch_id    bigint      NOT NULL     -- the batch that decoded it last
);
CREATE INDEX raw_elements_arrived_idx ON raw_elements (arrived_at);

-- Which element of its raw message an event is, so an element is never both stored and rejected.
ALTER TABLE events ADD COLUMN item integer NOT NULL DEFAULT 0;

-- Feedback already sent to devices, per element and kind: re-running a window (a heal run, a re-execution
-- from the UI) sends only what is still owed, unless the run asks to resend.
CREATE TABLE feedback_sent (
    raw_id      bigint      NOT NULL,
    item        integer     NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('ack', 'deadletter')),
    status      text        NOT NULL,
    run_id      text        NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (raw_id, item, kind)
);
CREATE INDEX feedback_sent_sent_at_idx ON feedback_sent (sent_at);  -- retention deletes by age
