"""Nothing the database can refuse leaves the decoder: the named bad inputs, event arrays, device clocks."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl
import pytest

from iot_core.formats.batch import DecodeOptions, decode_batch
from iot_core.formats.errors import DecodeError
from iot_core.formats.guards import Limits, load_json, printable
from iot_core.formats.topics import parse_topic
from iot_core.rows import DECODE_INPUT
from tests.support.bad_inputs import BAD_INPUTS, EVENTS, BadInput
from tests.support.fleet import fleet_catalog

RX = datetime(2025, 1, 15, 10, 30, tzinfo=UTC)
RX_US = int(RX.timestamp() * 1_000_000)


def raw(messages: list[tuple[str, bytes]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "raw_id": list(range(1, len(messages) + 1)),
            "topic": [topic for topic, _ in messages],
            "payload": [payload for _, payload in messages],
            "rx_us": [RX_US] * len(messages),
        },
        schema=DECODE_INPUT.without("arrived_at").schema,
    )


def test_the_corpus_has_at_least_forty_distinct_named_kinds() -> None:
    assert len(BAD_INPUTS) >= 40
    assert len({bad.name for bad in BAD_INPUTS}) == len(BAD_INPUTS)


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda bad: bad.name)
def test_each_bad_input_is_one_rejection_with_its_reason(bad: BadInput) -> None:
    batch = decode_batch(raw([(bad.topic, bad.payload)]), fleet_catalog())
    assert batch.measurements.height == 0
    assert batch.events.height == 0
    assert batch.rejected.select("raw_id", "item", "reason").rows() == [(1, 0, bad.reason)]
    [(topic, detail)] = batch.rejected.select("topic", "detail").rows()
    for text in (topic, detail):
        assert "\x00" not in text
        text.encode("utf-8")  # no lone surrogate


def test_event_array_elements_fail_alone() -> None:
    def element(n: int, **fields: object) -> dict[str, object]:
        return {"schema": 1, "event_id": f"e-{n}", "device_id": "bad-ev-01", "event_type": "t", **fields}

    payload = json.dumps(
        [element(0, value=1), element(1, value=10**400), element(2, meta={"x": "\x00"}), element(3, value=2)]
    )
    batch = decode_batch(raw([(EVENTS, payload.encode())]), fleet_catalog())
    assert batch.events.select("item", "event_id").rows() == [(0, "e-0"), (3, "e-3")]
    assert batch.rejected.select("item", "reason").rows() == [
        (1, "number_out_of_range"),
        (2, "nul_character"),
    ]


@pytest.mark.parametrize(
    ("ts_device", "stored"),
    [
        ("2025-01-15T10:29:00Z", datetime(2025, 1, 15, 10, 29, tzinfo=UTC)),
        ("1900-01-01T00:00:00Z", RX),
        ("2999-01-01T00:00:00Z", RX),
        (None, None),
    ],
)
def test_events_ts_device_falls_back_to_arrival_when_insane(
    ts_device: str | None, stored: datetime | None
) -> None:
    doc = {"schema": 1, "event_id": "e", "device_id": "bad-ev-01", "event_type": "t", "ts_device": ts_device}
    batch = decode_batch(raw([(EVENTS, json.dumps(doc).encode())]), fleet_catalog())
    assert batch.events["ts_device"].to_list() == [stored]
    assert batch.events["ts_server"].to_list() == [RX]


def test_limits_come_from_the_options() -> None:
    options = DecodeOptions(max_payload_bytes=10, max_field_chars=4, max_meta_bytes=20)
    assert options.limits == Limits(10, 4, 20)
    messages = [
        ("devices/dev/t", b"12345678901"),
        ("devices/dev/t", b"abcde"),
        ("devices/devic/t", b"1"),
    ]
    batch = decode_batch(raw(messages), fleet_catalog(), options)
    expected = ["payload_too_large", "field_too_large", "field_too_large"]
    assert batch.rejected["reason"].to_list() == expected


def test_load_json_accepts_what_jsonb_accepts() -> None:
    assert load_json('{"a": [1, 2.5, -1e308, "\\u00e9", "\\ud83d\\ude00", null, true]}', "x") == {
        "a": [1, 2.5, -1e308, "é", "😀", None, True]
    }
    with pytest.raises(DecodeError) as err:
        load_json('"\\ud83d"', "x")
    assert err.value.reason == "unpaired_surrogate"


def test_printable_escapes_what_text_columns_refuse() -> None:
    assert printable("a\x00b\ud800c") == "a\\x00b\\ud800c"
    assert printable("é" * 2000) == "é" * 1000


def test_a_topic_with_a_lone_surrogate_is_rejected() -> None:
    with pytest.raises(DecodeError) as err:
        parse_topic("devices/\ud800/temperature")
    assert (err.value.reason, err.value.stage) == ("unpaired_surrogate", "topic")
