"""The column-wise event path (`events_frame`) decides a message only where the per-message path stores
exactly the same rows (same values down to the sign of zero, same items, same element count) and rejects
nothing: on the simulator's events, hand-picked edge cases, generated near-misses of its grammar and
arbitrary JSON, under the default and under tight options and zones. The forms devices send are decided
by it, not left to the per-message path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iot_core.formats.batch import DecodeOptions
from iot_core.formats.events_frame import decode_events_frame
from simulator.messages import MessageFactory
from tests.support.bad_inputs import BAD_INPUTS
from tests.support.decoding import assert_decided_like_reference, raw_frame
from tests.support.fleet import fleet_catalog
from tests.support.near_misses import EVENT_PAYLOADS, WS

CATALOG = fleet_catalog()
TOPIC = "qs/v1/dev-1/events"
T0 = datetime(2025, 1, 15, 10, 30, tzinfo=UTC)
OPTIONS = [
    DecodeOptions(),
    DecodeOptions(default_tz=ZoneInfo("UTC")),
    DecodeOptions(
        default_tz=ZoneInfo("Europe/Berlin"),
        max_field_chars=8,
        max_meta_bytes=24,
        min_year=2025,
        max_future_s=0,
    ),
]


def check(frame: pl.DataFrame, options: DecodeOptions) -> int:
    rows, counts = decode_events_frame(
        frame,
        options.limits,
        options.default_tz,
        min_year=options.min_year,
        max_future_s=options.max_future_s,
    )
    return assert_decided_like_reference(frame, "events", rows, counts, CATALOG, options)


@pytest.mark.parametrize("options", OPTIONS[:2])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_simulated_events_are_decided_column_wise_as_one_by_one(seed: int, options: DecodeOptions) -> None:
    factory = MessageFactory(seed, kinds=("event",), bad_share=0.2)
    sent = [factory.next(T0 + timedelta(milliseconds=7 * i)) for i in range(3000)]
    rx = [int((T0 + timedelta(milliseconds=7 * i, microseconds=3)).timestamp() * 1e6) for i in range(3000)]
    decided = check(raw_frame([(m.topic, m.payload) for m in sent], rx), options)
    assert decided == sum(1 for m in sent if not m.bad)  # every good one, none of the bad ones


def test_the_bad_input_corpus_is_left_to_the_per_message_path() -> None:
    frame = raw_frame([(bad.topic, bad.payload) for bad in BAD_INPUTS])
    assert check(frame, DecodeOptions()) == 0


def _event(**fields: object) -> dict[str, object]:
    return {"schema": 1, "event_id": "ev-1", "device_id": "dev-1", "event_type": "door", **fields}


EDGE_DOCS: list[object] = [
    _event(), _event(value=-0), _event(value=-0.0), _event(value=0.1), _event(value=123456789012345),
    _event(value=1234567890123456), _event(value=1e5), _event(value=True), _event(value=False),
    _event(value=None), _event(value="open"), _event(value=""), _event(value=" "), _event(value="\u00a0"),
    _event(value="é"), _event(value="x" * 256), _event(value="x" * 257), _event(value=[1]), _event(value={}),
    _event(unit=""), _event(unit=None), _event(unit=5), _event(unit="u" * 257), _event(event_id="e" * 128),
    _event(event_id="e" * 129), _event(event_id=" "), _event(event_id=""), _event(event_id=5),
    _event(device_id="dev-2"), _event(device_id=" dev-1"), _event(event_type=None), _event(schema=1.0),
    _event(schema=True), _event(schema="1"), _event(schema=2), _event(ts_device="2025-01-15T10:29:00.000Z"),
    _event(ts_device="2025-01-15T10:29:00"), _event(ts_device="2025-01-15T11:29:00+01:00"),
    _event(ts_device="2025-01-15T10:35:00.001Z"), _event(ts_device="1999-12-31T23:59:59Z"),
    _event(ts_device="2025-02-30T10:00:00Z"), _event(ts_device=""), _event(ts_device=5),
    _event(ts_device=None), _event(meta={}), _event(meta=None), _event(meta={"b": "x", "a": 2.5}),
    _event(meta={"rssi": -42, "fw": "1.4.2"}), _event(meta={"a b": 1, "a": 2, "": None, "~": True}),
    _event(meta={"é": "ü", "k": 0.00001, "z": -0.0}), _event(meta={"value": 1}), _event(meta={"a": {"b": 1}}),
    _event(meta=[]), _event(meta="x"), _event(meta={"k": "v" * 40}), _event(extra=1, Schema=2),
    {"event_id": "ev-1", "device_id": "dev-1", "event_type": "door"}, [], [_event()],
    [_event(event_id="a"), _event(event_id="b", value=1.5)], [_event(), _event(schema=2)], [_event(), 5],
    5, "x", None,
]  # fmt: skip
EDGE_TEXTS = [
    '{"schema":1,"event_id":"a","device_id":"dev-1","event_type":"t","value":1,"value":2}',
    '{"schema":1,"event_id":"a","device_id":"dev-1","event_type":"t","meta":{"a":1},"meta":{"b":2}}',
    '{"schema":1,"event_id":"a","device_id":"dev-1","event_type":"t","meta":{"a":1,"a":2}}',
    '{"schema":1,"event_id":"a","device_id":"dev-1","event_type":"t","meta":{"event_id":"b"}}',
    '{"schema":1,"device_id":"dev-1","event_type":"t","meta":{"event_id":"b"}}',
    '{"schema":1,"event_id":"a\\u0041","device_id":"dev-1","event_type":"t"}',
    '{"schema":1,"event_id":"a","device_id":"dev-1","event_type":"t","value":01}',
    '{"schema":1,"event_id":"a","device_id":"dev-1","event_type":"t","value":NaN}',
    '{"schema":1,"event_id":"a","device_id":"dev-1","event_type":"t","meta":{"a":1e400}}',
    '{"schema":1,"event_id":"a","device_id":"dev-1","event_type":"t","meta":{"a":"\\u0000"}}',
    ' \t\r\n{ "schema" : 1 ,\n"event_id":"a", "device_id" :"dev-1","event_type":"t" } \n',
    '\ufeff{"schema":1,"event_id":"a","device_id":"dev-1","event_type":"t"}',
    '{"schema":1,"event_id":"a","device_id":"dev-1","event_type":"t"} x',
    '[{"schema":1,"event_id":"a","device_id":"dev-1","event_type":"t"},]',
    '{"schema":1,"event_id":"a\x00","device_id":"dev-1","event_type":"t"}',
    '{"schema":1,"event_id":"a\x7f\u2028","device_id":"dev-1","event_type":"t","unit":"\x7f"}',
]


@pytest.mark.parametrize("options", OPTIONS)
def test_edge_cases_are_decided_as_one_by_one(options: DecodeOptions) -> None:
    payloads = [json.dumps(doc).encode() for doc in EDGE_DOCS] + [text.encode() for text in EDGE_TEXTS]
    payloads += [json.dumps(doc, ensure_ascii=False).encode() for doc in EDGE_DOCS]
    frame = raw_frame([(TOPIC, payload) for payload in payloads] + [(TOPIC, b"\xff")])
    assert check(frame, options) > 0


def test_topics_and_receive_times_are_decided_as_one_by_one() -> None:
    topics = [TOPIC, "qs/v1/dev-1/events/x", "qs/v1//events", "qs/v2/dev-1/events", "qs/v1/dev-1\x00/events",
              f"qs/v1/{'d' * 257}/events", "Qs/v1/dev-1/events", ""]  # fmt: skip
    payload = json.dumps(_event()).encode()
    assert check(raw_frame([(t, payload) for t in topics]), DecodeOptions()) == 1
    rx = [946_684_800_000_000, 946_684_799_999_999, 4_294_967_295_999_999, 4_294_967_296_000_000]
    frame = raw_frame([(TOPIC, payload)] * len(rx), rx)
    assert check(frame, DecodeOptions(max_future_s=10**10)) == 2


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payloads=st.lists(st.tuples(WS, EVENT_PAYLOADS, WS).map("".join), min_size=1, max_size=12),
    options=st.sampled_from(OPTIONS),
)
def test_generated_near_misses_are_decided_as_one_by_one(payloads: list[str], options: DecodeOptions) -> None:
    check(raw_frame([(TOPIC, p.encode("utf-8", "surrogatepass")) for p in payloads]), options)
