-- From here on a raw message in which the decoder finds exactly one element (a plain reading, a single
-- event, a message rejected as a whole: most messages) has no row in raw_elements; a missing row means one
-- element. Messages landed by a batch that started before this migration may have been decoded before
-- elements were counted at all, so reconciliation keeps the weaker rule for them when they have no row: at
-- least one fact or rejection.
CREATE TABLE one_element_implied (
    since timestamptz NOT NULL  -- batches started since then landed messages whose missing row means one
);
INSERT INTO one_element_implied (since) VALUES (now());
