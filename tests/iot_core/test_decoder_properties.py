"""Property tests: whatever bytes and topics arrive, decode_batch raises nothing, accounts for every
message, and emits only what PostgreSQL accepts (checked in Python, then by COPY into real column types)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime

import polars as pl
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iot_core.formats.batch import DecodedBatch, decode_batch
from iot_core.rows import DECODE_INPUT
from tests.support.bad_inputs import BAD_INPUTS
from tests.support.database import database_url
from tests.support.fleet import fleet_catalog

RX_US = int(datetime(2025, 1, 15, 10, 30, tzinfo=UTC).timestamp() * 1_000_000)
CATALOG = fleet_catalog()

_TRICKY_TEXT = st.text(alphabet=st.sampled_from(["a", "é", " ", "\x00", "\ud800", "\udc00", "😀", "/", '"']))
_STRINGS = st.one_of(
    st.text(max_size=20), _TRICKY_TEXT, st.sampled_from(["", "x" * 300, "2999-01-01T00:00:00Z"])
)
_NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
)
_JSON = st.recursive(
    st.none() | st.booleans() | _NUMBERS | _STRINGS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_STRINGS, children, max_size=4),
    max_leaves=12,
)
_EVENT = st.fixed_dictionaries(
    {
        "schema": st.sampled_from([1, 1, 1, 2, "1", None]),
        "event_id": _STRINGS,
        "device_id": st.sampled_from(["dev-1", "dev-1", "dev-2"]),
        "event_type": _STRINGS,
    },
    optional={"value": _JSON, "unit": _JSON, "ts_device": _JSON, "meta": _JSON},
)
_SEGMENT = st.text(max_size=12)
_TOPICS = st.one_of(
    st.text(max_size=40),
    st.builds("devices/{}/{}".format, _SEGMENT, _SEGMENT),
    st.just("devices/dev-1/temperature"),
    st.just("qs/v1/dev-1/events"),
    st.just("tele/f2-aabbccddee01/sensor-mode/J1/sensor-1"),
    st.just("stat/f2-aabbccddee01/access-control-mode/J2/strike-1"),
    st.just("stat/f2-aabbccddee01/door-sensors"),
)


def _dump(doc: object) -> bytes:
    return json.dumps(doc).encode()  # NaN/Infinity, \u0000 and lone-surrogate escapes as json writes them


_PAYLOADS = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=40).map(str.encode),
    st.builds(
        "{}{}".format,
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(["", "C", " °C", ",5", "x10"]),
    ).map(str.encode),
    _JSON.map(_dump),
    st.fixed_dictionaries({"value": _JSON}, optional={"unit": _JSON, "ts": _JSON}).map(_dump),
    _EVENT.map(_dump),
    st.lists(_EVENT, min_size=1, max_size=4).map(_dump),
    st.dictionaries(_STRINGS, _JSON, max_size=3).map(_dump),
    st.fixed_dictionaries(
        {"timestamp": _JSON, "data": st.one_of(_STRINGS, st.just("01 03 04 09 C4 02 58 FA 0C"))}
    ).map(_dump),
    st.sampled_from([bad.payload for bad in BAD_INPUTS]),
)
MESSAGES = st.lists(st.tuples(_TOPICS, _PAYLOADS), min_size=1, max_size=8)


def _raw(messages: list[tuple[str, bytes]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "raw_id": list(range(1, len(messages) + 1)),
            "topic": [topic for topic, _ in messages],
            "payload": [payload for _, payload in messages],
            "rx_us": [RX_US + i for i in range(len(messages))],
        },
        schema=DECODE_INPUT.without("arrived_at").schema,
    )


def assert_storable(batch: DecodedBatch, raw_ids: list[int]) -> None:
    facts = [
        *batch.measurements.select("raw_id", "item").rows(),
        *batch.events.select("raw_id", "item").rows(),
    ]
    rejected = batch.rejected.select("raw_id", "item").rows()
    assert not set(facts) & set(rejected), "an item both stored and rejected"
    assert len(set(facts)) == len(facts) and len(set(rejected)) == len(rejected)
    assert {raw_id for raw_id, _ in facts + rejected} == set(raw_ids), (
        "a message with neither fact nor rejection"
    )
    for frame in (batch.measurements, batch.events, batch.rejected):
        for name, dtype in frame.schema.items():
            values = [v for v in frame[name].to_list() if v is not None]
            if dtype == pl.String:
                for value in values:
                    assert "\x00" not in value, name
                    value.encode("utf-8")
            elif dtype == pl.Float64:
                assert all(math.isfinite(v) for v in values), name
    for meta in batch.events["meta"]:
        assert "\\u0000" not in meta
        json.loads(meta, parse_constant=lambda name: pytest.fail(f"meta holds {name}"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MESSAGES)
def test_decode_batch_accounts_for_everything_and_emits_only_storable_values(
    messages: list[tuple[str, bytes]],
) -> None:
    batch = decode_batch(_raw(messages), CATALOG)
    assert_storable(batch, list(range(1, len(messages) + 1)))


# Temp tables with the column types of measurements / events / rejected (sql/001_core_tables.sql);
# device and metric become text columns here, as they are in devices.device_key and metrics.name/unit;
# a rejection's event_id addresses the ACK and must be plain text too.
_TEMP_TABLES = """
CREATE TEMP TABLE p_measurements (
    raw_id bigint NOT NULL, item integer NOT NULL, device_key text NOT NULL, device_kind text NOT NULL,
    metric text NOT NULL, unit text NOT NULL, ts timestamptz NOT NULL, value_num double precision,
    value_text text, arrived_at timestamptz NOT NULL,
    CHECK (value_num IS NOT NULL OR value_text IS NOT NULL));
CREATE TEMP TABLE p_events (
    raw_id bigint NOT NULL, item integer NOT NULL, device_key text NOT NULL, event_id text NOT NULL,
    schema integer NOT NULL, event_type text NOT NULL, value_num double precision, value_text text,
    unit text, ts_device timestamptz, ts_server timestamptz NOT NULL, meta jsonb NOT NULL);
CREATE TEMP TABLE p_rejected (
    raw_id bigint NOT NULL, item integer NOT NULL,
    stage text NOT NULL CHECK (stage IN ('topic', 'decode', 'validate', 'duplicate')),
    reason text NOT NULL, detail text NOT NULL, topic text NOT NULL, event_id text);
"""


@pytest.fixture(scope="module")
def pg() -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url("postgres")) as conn:
        conn.execute(_TEMP_TABLES)
        conn.commit()
        yield conn


def _copy(conn: psycopg.Connection, table: str, frame: pl.DataFrame) -> None:
    with conn.cursor().copy(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN") as copy:
        for row in frame.iter_rows():
            copy.write_row(row)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(MESSAGES)
def test_postgresql_accepts_every_decoded_row(
    pg: psycopg.Connection, messages: list[tuple[str, bytes]]
) -> None:
    batch = decode_batch(_raw(messages), CATALOG)
    try:
        _copy(pg, "p_measurements", batch.measurements)
        _copy(pg, "p_events", batch.events)
        _copy(pg, "p_rejected", batch.rejected)
    finally:
        pg.rollback()


def test_postgresql_accepts_the_decoded_bad_input_corpus(pg: psycopg.Connection) -> None:
    batch = decode_batch(_raw([(bad.topic, bad.payload) for bad in BAD_INPUTS]), CATALOG)
    assert batch.rejected.height == len(BAD_INPUTS)
    try:
        _copy(pg, "p_rejected", batch.rejected)
    finally:
        pg.rollback()
