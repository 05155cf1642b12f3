"""`decode_batch` with its column-wise paths (plain, events, F2) gives exactly the frames of decoding
message by message: the same measurements, events, rejections (stage, reason, detail, event id) and
element counts, row for row and in the same order, on the simulator's mix of all three formats, the
bad-input corpus, and generated batches mixing near-misses of every grammar with hostile topics and
bytes, in any raw_id order and with receive times inside and outside the exact range."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iot_core.formats.batch import DecodeOptions, decode_batch
from simulator.messages import MessageFactory
from tests.support.bad_inputs import BAD_INPUTS
from tests.support.decoding import RX_US, assert_same_both_ways, exact, raw_frame
from tests.support.fleet import fleet_catalog
from tests.support.near_misses import EVENT_PAYLOADS, F2_MESSAGES, WS, exotic_catalog

T0 = datetime(2025, 1, 15, 10, 30, tzinfo=UTC)
CATALOG = exotic_catalog()
OPTIONS = [
    DecodeOptions(),
    DecodeOptions(default_tz=ZoneInfo("UTC")),
    DecodeOptions(
        default_tz=ZoneInfo("America/New_York"),
        max_field_chars=12,
        max_meta_bytes=30,
        max_payload_bytes=120,
        min_year=2025,
        max_future_s=0,
    ),
]


@pytest.mark.parametrize("options", OPTIONS, ids=["default", "zoneinfo-utc", "tight"])
@pytest.mark.parametrize("seed", [1, 2])
def test_the_simulated_mix_decodes_the_same_both_ways(seed: int, options: DecodeOptions) -> None:
    factory = MessageFactory(seed, bad_share=0.2)
    sent = [factory.next(T0 + timedelta(milliseconds=7 * i)) for i in range(4000)]
    rx = [int((T0 + timedelta(milliseconds=7 * i, microseconds=3)).timestamp() * 1e6) for i in range(4000)]
    fast = assert_same_both_ways(
        raw_frame([(m.topic, m.payload) for m in sent], rx), fleet_catalog(), options
    )
    assert fast.measurements.height + fast.events.height + fast.rejected.height >= len(sent)


def test_the_bad_input_corpus_decodes_the_same_both_ways_with_its_reasons() -> None:
    frame = raw_frame([(bad.topic, bad.payload) for bad in BAD_INPUTS])
    fast = assert_same_both_ways(frame, fleet_catalog())
    assert Counter(fast.rejected["reason"]) == Counter(bad.reason for bad in BAD_INPUTS)


def test_a_format_with_few_candidates_is_decoded_one_by_one_with_the_same_result() -> None:
    factory = MessageFactory(5, bad_share=0.2)
    sent = [factory.next(T0 + timedelta(milliseconds=7 * i)) for i in range(300)]
    frame = raw_frame([(m.topic, m.payload) for m in sent])
    slow = decode_batch(frame, fleet_catalog(), vectorised=False)
    few = decode_batch(frame, fleet_catalog())  # about 100 candidates a format: all one by one
    for name in ("measurements", "events", "rejected", "elements"):
        assert exact(getattr(few, name)) == exact(getattr(slow, name)), name


def test_an_empty_page_decodes_to_empty_frames() -> None:
    fast = assert_same_both_ways(raw_frame([]), CATALOG)
    assert fast.elements.is_empty()


_PLAIN = st.tuples(
    st.sampled_from(["devices/dev-1/temperature", "devices/dev-1/state"]),
    st.one_of(
        st.sampled_from(
            ["23.5", "-0", "23.5 °C", "50%", "on", "idle", '{"value": 1, "ts": "2025-01-15T10:29:00Z"}']
        ),
        st.text(max_size=12),
    ),
)
_EVENTS = st.tuples(
    st.sampled_from(["qs/v1/dev-1/events", "qs/v1/dev-1/events", "qs/v1/dev-2/events"]),
    st.tuples(WS, EVENT_PAYLOADS, WS).map("".join),
)
_HOSTILE = st.tuples(
    st.one_of(
        st.text(max_size=30), st.sampled_from(["qs/v1/dev-1/events", "stat/f2-aabbccddee01/door-sensors"])
    ),
    st.one_of(
        st.text(max_size=40), st.sampled_from([bad.payload.decode("utf-8", "replace") for bad in BAD_INPUTS])
    ),
)
_MESSAGES = st.one_of(_PLAIN, _EVENTS, _EVENTS, F2_MESSAGES, F2_MESSAGES, _HOSTILE)
_RAW_TOPICS = ["qs/v1/dev-1/events", "tele/f2-aabbccddee01/sensor-mode/J1/sensor-1"]
_RAW_BYTES = st.tuples(st.sampled_from(_RAW_TOPICS), st.binary(max_size=40))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(
        st.one_of(_MESSAGES.map(lambda m: (m[0], m[1].encode("utf-8", "surrogatepass"))), _RAW_BYTES),
        min_size=1,
        max_size=25,
    ),
    order=st.randoms(use_true_random=False),
    shifts=st.lists(st.sampled_from([0, 0, 0, 1, -(10**15), 3 * 10**15]), min_size=25, max_size=25),
    options=st.sampled_from(OPTIONS),
)
def test_generated_batches_decode_the_same_both_ways(
    messages: list[tuple[str, bytes]], order: random.Random, shifts: list[int], options: DecodeOptions
) -> None:
    raw_ids = list(range(10, 10 + 3 * len(messages), 3))
    order.shuffle(raw_ids)
    rx = [RX_US + 11 * i + shift for i, shift in zip(range(len(messages)), shifts, strict=False)]
    frame = raw_frame(messages, rx).with_columns(raw_id=pl.Series(raw_ids, dtype=pl.Int64))
    assert_same_both_ways(frame, CATALOG, options)


def test_a_page_of_every_kind_of_element_decodes_the_same_both_ways() -> None:
    # an event array whose middle element is bad, next to good single events and F2 readings
    good = {"schema": 1, "event_id": "e", "device_id": "dev-1", "event_type": "t"}
    array = json.dumps([good, {**good, "schema": 2}, {**good, "event_id": "f"}]).encode()
    frame = raw_frame(
        [
            ("qs/v1/dev-1/events", json.dumps(good).encode()),
            ("qs/v1/dev-1/events", array),
            ("stat/f2-aabbccddee01/door-sensors", b'{"door-2": true, "door-1": false}'),
            ("devices/dev-1/temperature", b"23.5"),
        ]
    )
    fast = assert_same_both_ways(frame, CATALOG)
    assert fast.rejected["item"].to_list() == [1]
    assert fast.elements.rows() == [(1, 1), (2, 3), (3, 2), (4, 1)]
    assert decode_batch(frame, CATALOG).events["item"].to_list() == [0, 0, 2]
