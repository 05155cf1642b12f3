-- Core tables. Plain PostgreSQL DDL; 004 turns measurements and raw_messages into hypertables where
-- TimescaleDB is available, so both paths have the same tables and the same SQL API.
CREATE TABLE batches (
    batch_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          text        NOT NULL,
    partition_key   text        NOT NULL,
    range_start     timestamptz NOT NULL,
    range_end       timestamptz NOT NULL,
    start_id        text        NOT NULL,   -- inclusive XRANGE bounds of the window
    end_id          text        NOT NULL,
    streams         text[]      NOT NULL,
    decoder_version text        NOT NULL,
    raw_count       integer     NOT NULL DEFAULT 0,
    measurement_count integer   NOT NULL DEFAULT 0,
    event_count     integer     NOT NULL DEFAULT 0,
    rejected_count  integer     NOT NULL DEFAULT 0,
    duplicate_count integer     NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE UNIQUE INDEX batches_run_idx ON batches (run_id);
CREATE INDEX batches_range_idx ON batches (range_start, range_end);

-- One row per stream entry: the durable archive of every message, untouched.
CREATE TABLE raw_messages (
    raw_id      bigint GENERATED ALWAYS AS IDENTITY,
    arrived_at  timestamptz NOT NULL,        -- from the entry ID's milliseconds (Redis clock)
    stream      text        NOT NULL,
    entry_ms    bigint      NOT NULL,
    entry_seq   bigint      NOT NULL,
    topic       text        NOT NULL,
    payload     bytea       NOT NULL,
    qos         smallint    NOT NULL,
    retain      boolean     NOT NULL,
    rx_us       bigint      NOT NULL,        -- listener receive time
    batch_id    bigint      NOT NULL,        -- the batch that landed it
    PRIMARY KEY (arrived_at, stream, entry_ms, entry_seq)
);
CREATE INDEX raw_messages_raw_id_idx ON raw_messages (raw_id);

CREATE TABLE devices (
    device_id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_key  text        NOT NULL UNIQUE,
    kind        text        NOT NULL CHECK (kind IN ('plain', 'event', 'f2')),
    first_seen  timestamptz NOT NULL DEFAULT now()
);

-- A metric is a name with its unit ('' when none), so fact rows need only an integer.
CREATE TABLE metrics (
    metric_id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    unit        text NOT NULL DEFAULT '',
    UNIQUE (name, unit)
);

CREATE TABLE measurements (
    ts          timestamptz NOT NULL,        -- device time when sane, else arrival
    device_id   integer     NOT NULL REFERENCES devices (device_id),
    metric_id   integer     NOT NULL REFERENCES metrics (metric_id),
    value_num   double precision,
    value_text  text,
    arrived_at  timestamptz NOT NULL,
    raw_id      bigint      NOT NULL,        -- lineage: raw_messages.raw_id
    batch_id    bigint      NOT NULL,        -- lineage: batches.batch_id
    PRIMARY KEY (device_id, metric_id, ts),
    CHECK (value_num IS NOT NULL OR value_text IS NOT NULL)
);
CREATE INDEX measurements_ts_idx ON measurements (ts DESC);
CREATE INDEX measurements_raw_idx ON measurements (raw_id);

-- Reference-004 events, stored idempotently by (device, event_id).
CREATE TABLE events (
    device_id   integer     NOT NULL REFERENCES devices (device_id),
    event_id    text        NOT NULL,
    schema      integer     NOT NULL,
    event_type  text        NOT NULL,
    value_num   double precision,
    value_text  text,
    unit        text,
    ts_device   timestamptz,
    ts_server   timestamptz NOT NULL,        -- arrival time
    meta        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    raw_id      bigint      NOT NULL,
    batch_id    bigint      NOT NULL,
    PRIMARY KEY (device_id, event_id)
);
CREATE INDEX events_ts_device_idx ON events (ts_device);
CREATE INDEX events_type_ts_idx ON events (event_type, ts_server);
CREATE INDEX events_device_ts_idx ON events (device_id, ts_server);
CREATE INDEX events_raw_idx ON events (raw_id);

-- Everything that did not become a fact row, with why. `item` is the element of a message that
-- carries several (an event array); 0 for whole messages. stage 'duplicate' marks messages whose
-- identity (event_id, or device + metric + timestamp) was already stored from another raw message.
CREATE TABLE rejected (
    raw_id      bigint      NOT NULL,
    item        integer     NOT NULL DEFAULT 0,
    stage       text        NOT NULL CHECK (stage IN ('topic', 'decode', 'validate', 'duplicate')),
    reason      text        NOT NULL,
    detail      text        NOT NULL DEFAULT '',
    topic       text        NOT NULL,
    arrived_at  timestamptz NOT NULL,
    batch_id    bigint      NOT NULL,
    PRIMARY KEY (raw_id, item)
);
CREATE INDEX rejected_arrived_idx ON rejected (arrived_at);
