"""The vectorised plain-metric path gives exactly what decoding message by message gives: same rows, same
order, same values (down to the sign of zero), on the simulator's mix, the bad-input corpus, hand-picked
edge cases of the grammar it accepts, and generated near-misses of that grammar."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iot_core.formats.batch import DecodeOptions, decode_batch
from iot_core.formats.plain_frame import decode_plain_frame
from iot_core.formats.values import GLUED_UNITS
from simulator.messages import MessageFactory
from tests.support.bad_inputs import BAD_INPUTS
from tests.support.decoding import exact, raw_frame
from tests.support.fleet import fleet_catalog

CATALOG = fleet_catalog()
T0 = datetime(2025, 1, 15, 10, 30, tzinfo=UTC)
RX_US = int(T0.timestamp() * 1_000_000)
TOPIC = "devices/dev-1/temperature"


def raw(messages: list[tuple[str, bytes]], rx_us: list[int] | None = None) -> pl.DataFrame:
    return raw_frame(messages, rx_us or [RX_US + 7 * i for i in range(len(messages))])


def assert_same(frame: pl.DataFrame, options: DecodeOptions | None = None) -> int:
    """Both paths agree; returns how many messages the vectorised path decided itself."""
    slow = decode_batch(frame, CATALOG, options, vectorised=False)
    fast = decode_batch(frame, CATALOG, options, column_wise_min_rows=1)
    for name in ("measurements", "events", "rejected"):
        a, b = getattr(slow, name), getattr(fast, name)
        assert a.schema == b.schema, name
        assert exact(a) == exact(b), name
    options = options or DecodeOptions()
    decided = decode_plain_frame(
        frame, options.limits, min_year=options.min_year, max_future_s=options.max_future_s
    )
    return decided.height


@pytest.mark.parametrize("kinds", [("plain",), ("plain", "event", "f2")])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_simulator_mix_decodes_the_same_both_ways(seed: int, kinds: tuple[str, ...]) -> None:
    factory = MessageFactory(seed, kinds=kinds, bad_share=0.2)
    sent = [factory.next(T0 + timedelta(milliseconds=7 * i)) for i in range(3000)]
    decided = assert_same(raw([(m.topic, m.payload) for m in sent]))
    plain_good = sum(1 for m in sent if m.kind == "plain" and not m.bad)
    assert decided >= 0.9 * plain_good  # the vectorised path carries the common forms


def test_bad_input_corpus_decodes_the_same_both_ways() -> None:
    decided = assert_same(raw([(bad.topic, bad.payload) for bad in BAD_INPUTS]))
    assert decided == 0  # every one of them is rejected, which only the per-message path does


EDGE_PAYLOADS = [
    "23.5", "-0", "0", "007", "-12.000", "123456789012345", "1234567890123456", "1.", ".5", "+5", "1e5",
    "1E", "23.5C", "23.5c", "50%", "23.5 °C", "27.93   °C", " 23.5 ", "\t23.5\n", "\x0b23.5", "23.5\x1c",
    "٣", "12 m s", "12 °C ", "1.5.3", "1.5 .3", "12 " + "u" * 33, "12 " + "u" * 32, "0x10", "1,5",
    "true", "TRUE", "Off", "on", "nan", "NaN", "-inf", "Infinity", "idle", "door open", "door  open ",
    "a" * 300, "a-b_c.d:e", "é", "", " ", "\x00", "1\x00", "23.5 \u00a0C", "23.5 C\u2003",
    '{"value": 23.5}', '{"value": -0}', '{"value": -0.0}', '{"value": 0}', '{"value": 01}',
    '{"value": 1.5e3}', '{"value": 123456789012345}', '{"value": 1234567890123456}',
    '{"value": "value"}', '{"value": "idle"}', '{"value": ""}', '{"value": " "}', '{"value": "\\u0041"}',
    '{"value": true}', '{"value": false}', '{"value": null}', '{"value": [1]}', '{"value": 1, "value": 2}',
    '{"unit": "C", "value": 1}', '{"value": 1, "unit": null}', '{"value": 1, "unit": ""}',
    '{"value": 1, "unit": 5}', '{"value": 1, "ts": null}', '{"value": 1, "ts": ""}', '{"val": 1}',
    '{"value": 1, "ts": "2025-01-15T10:29:00.000Z"}', '{"value": 1, "ts": "2025-01-15T10:29:00Z"}',
    '{"value": 1, "ts": "2025-01-15T10:29:00.123456Z"}', '{"value": 1, "ts": "2025-01-15T10:29:00.1Z"}',
    '{"value": 1, "ts": "2025-02-30T10:29:00.000Z"}', '{"value": 1, "ts": "2025-01-15T23:59:60Z"}',
    '{"value": 1, "ts": "1999-12-31T23:59:59.999Z"}', '{"value": 1, "ts": "0999-01-01T00:00:00Z"}',
    '{"value": 1, "ts": "2025-01-15T10:35:00.000Z"}', '{"value": 1, "ts": "2025-01-15T10:35:00.001Z"}',
    '{"value": 1, "ts": "2025-01-15T10:29:00+00:00"}', '{"value": 1, "ts": 5}',
    '{"value": 1, "unit": "C", "ts": "2025-01-15T10:29:00.000Z", "x": 1}', '{"value": 1,}',
    ' {"value":1,"unit":"°C"} ', '{"value": 1, "unit": "' + "u" * 300 + '"}', '{"value":"a\x01"}',
    '{"value": 1}x', '[{"value": 1}]',
]  # fmt: skip


def test_edge_cases_decode_the_same_both_ways() -> None:
    frame = raw([(TOPIC, p.encode()) for p in EDGE_PAYLOADS] + [(TOPIC, b"\xff"), (TOPIC, b"23.5 \xb0C")])
    assert_same(frame)
    assert_same(frame, DecodeOptions(max_field_chars=4, min_year=2025, max_future_s=0))


def test_topics_and_receive_times_decide_the_same_both_ways() -> None:
    topics = [
        TOPIC, "devices/a/b/c", "devices//m", "devices/a/", "devices/a\x00/m", f"devices/{'d' * 300}/m",
        "devices/é/°", "devices/a/b ", "Devices/a/b", "",
    ]  # fmt: skip
    assert_same(raw([(t, b"23.5") for t in topics]))
    # receive times at and beyond the range the vectorised path takes
    rx = [946_684_800_000_000, 946_684_799_999_999, 4_294_967_295_999_999, 1_736_937_000_123_457]
    assert_same(raw([(TOPIC, b"1")] * len(rx), rx), DecodeOptions(max_future_s=10**10))


def test_no_glued_unit_starts_where_a_numeral_could_go_on() -> None:
    # The numeral the vectorised path splits off is Python's greedy one only if no glued unit could
    # continue it (a digit, a decimal point or an exponent).
    assert not [u for u in GLUED_UNITS if u[0] in "0123456789.eE+-"]


_PIECES = st.sampled_from(
    ["1", "0", "-", ".", "5", "e", " ", "\t", "C", "°", "%", "hPa", "a", "Z", '"', "{", "}", ":", ",",
     "value", "unit", "ts", "true", "null", "2025-01-15T10:29:00.000Z", "\\", "\x00", "é", "\u00a0"]
)  # fmt: skip
_NEAR_JSON = st.fixed_dictionaries(
    {"value": st.one_of(st.integers(-(10**17), 10**17), st.floats(allow_nan=False), st.text(max_size=5))},
    optional={
        "unit": st.one_of(st.none(), st.text(max_size=4)),
        "ts": st.sampled_from(["", "2025-01-15T10:29:00Z"]),
    },
).map(json.dumps)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.lists(_PIECES, max_size=8).map("".join), _NEAR_JSON), min_size=1, max_size=20))
def test_generated_near_misses_decode_the_same_both_ways(payloads: list[str]) -> None:
    assert_same(raw([(TOPIC, p.encode("utf-8", "surrogatepass")) for p in payloads]))
