"""Decoders of the three formats, message by message and as a polars batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest

from dagster_project.lib.validation import MEASUREMENT_SCHEMA, split_valid
from iot_core.formats.batch import DecodeOptions, decode_batch
from iot_core.formats.errors import DecodeError
from iot_core.formats.events import decode_event, split_events
from iot_core.formats.f2 import encode_datapoints, encode_reply, to_hex
from iot_core.formats.f2_messages import F2Catalog, SensorEntry
from iot_core.formats.plain import decode_plain
from iot_core.formats.topics import parse_topic
from iot_core.formats.values import Value, parse_text_value
from simulator.fleet import SENSOR_MODELS
from tests.support.reference import REFERENCE_004_EVENT


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("23.5", Value(23.5, None, "")),
        ("27.93 °C", Value(27.93, None, "°C")),
        ("27.93°C", Value(27.93, None, "°C")),
        ("-4 hPa", Value(-4.0, None, "hPa")),
        ("1e3 W", Value(1000.0, None, "W")),
        ("  42 ", Value(42.0, None, "")),
        ("true", Value(1.0, "true")),
        ("ON", Value(1.0, "on")),
        ("off", Value(0.0, "off")),
        ("idle", Value(None, "idle")),
        ("heart rate 72 bpm", Value(None, "heart rate 72 bpm")),
        ("23.5C", Value(23.5, None, "C")),
        ("50%", Value(50.0, None, "%")),
        ("0 x10", Value(0.0, None, "x10")),
        ("0x10", Value(None, "0x10")),
        ("0xff", Value(None, "0xff")),
        ("1,5", Value(None, "1,5")),
        ("1.2.3", Value(None, "1.2.3")),
        ("12abc", Value(None, "12abc")),
    ],
)
def test_plain_text_values(text: str, expected: Value) -> None:
    assert parse_text_value(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty_value"),
        ("   ", "empty_value"),
        ("nan", "not_finite"),
        ("-Infinity", "not_finite"),
        ("1e999", "number_out_of_range"),
        ("1" * 400, "number_out_of_range"),
        ("x" * 300, "field_too_large"),
        ("on\x00", "nul_character"),
    ],
)
def test_plain_bad_values(text: str, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        parse_text_value(text)
    assert err.value.reason == reason


def test_plain_json_object_with_unit_and_ts() -> None:
    value, ts = decode_plain('{"value": 23.5, "unit": "C", "ts": "2025-01-15T10:30:00.000Z"}', UTC)
    assert value == Value(23.5, None, "C")
    assert ts == datetime(2025, 1, 15, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ('{"unit": "C"}', "missing_value"),
        ('{"value": {"a": 1}}', "bad_value"),
        ('{"value": 1, "ts": "soon"}', "bad_ts"),
        ("{nope", "bad_json"),
        ('{"value": 1, "unit": 5}', "bad_unit"),
    ],
)
def test_plain_json_errors(payload: str, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_plain(payload, UTC)
    assert err.value.reason == reason


def test_reference_004_event_exactly() -> None:
    [element] = split_events(REFERENCE_004_EVENT)
    event = decode_event(element, "esp32-01", UTC)
    assert event.event_id == "esp32-01-1707523200000"
    assert event.device_id == "esp32-01"
    assert (event.schema, event.event_type, event.value_num, event.value_text, event.unit) == (
        1,
        "temperature",
        23.5,
        None,
        "C",
    )
    assert event.ts_device == datetime(2024, 2, 10, tzinfo=UTC)
    assert event.meta == {"sensor": "dht22", "location": "living_room"}


def test_reference_004_test_event_with_integer_value_and_no_optionals() -> None:
    doc = {"schema": 1, "event_id": "test-001", "device_id": "test-device", "event_type": "test", "value": 42}
    event = decode_event(doc, "test-device", UTC)
    assert (event.value_num, event.unit, event.ts_device, event.meta) == (42.0, None, None, {})


def test_naive_event_time_takes_the_configured_zone() -> None:
    doc = {
        "schema": 1,
        "event_id": "e",
        "device_id": "d",
        "event_type": "t",
        "ts_device": "2024-02-10T01:00:00",
    }
    event = decode_event(doc, "d", timezone(timedelta(hours=1)))
    assert event.ts_device == datetime(2024, 2, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"schema": 2}, "unsupported_schema"),
        ({"event_id": ""}, "missing_event_id"),
        ({"event_type": None}, "missing_event_type"),
        ({"device_id": "other"}, "device_mismatch"),
        ({"ts_device": "yesterday"}, "bad_ts"),
        ({"value": {"x": 1}}, "bad_value"),
        ({"meta": [1]}, "bad_meta"),
        ({"schema": True}, "unsupported_schema"),
    ],
)
def test_event_errors(change: dict, reason: str) -> None:
    doc = {**json.loads(REFERENCE_004_EVENT), **change}
    with pytest.raises(DecodeError) as err:
        decode_event(doc, "esp32-01", UTC)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("topic", "kind", "device"),
    [
        ("devices/a1b2c3d4/temperature", "plain", "a1b2c3d4"),
        ("qs/v1/esp32-01/events", "event", "esp32-01"),
        ("tele/f2-aabbccddee01/sensor-mode/J1/sensor-1", "f2_sensor", "f2-aabbccddee01"),
        ("stat/f2-AABBCCDDEE01/access-control-mode/J2/strike-1", "f2_sensor", "f2-aabbccddee01"),
        ("stat/f2-aabbccddee01/door-sensors", "f2_doors", "f2-aabbccddee01"),
    ],
)
def test_topics(topic: str, kind: str, device: str) -> None:
    parsed = parse_topic(topic)
    assert (parsed.kind, parsed.device_key) == (kind, device)


@pytest.mark.parametrize(
    "topic", ["devices/x", "devices/x/y/z", "qs/v1/x/acks", "tele/f2-xyz/a/J1/s", "foo", ""]
)
def test_unknown_topics(topic: str) -> None:
    with pytest.raises(DecodeError) as err:
        parse_topic(topic)
    assert err.value.stage == "topic"


def catalog() -> F2Catalog:
    cat = F2Catalog()
    cat.add(
        "aabbccddee01", "J1", "sensor-1", SensorEntry("sensor-mode", "th-sensor", SENSOR_MODELS["th-sensor"])
    )
    cat.add("aabbccddee01", "J2", "strike-1", SensorEntry("access-control-mode", "strike"))
    return cat


def raw_frame(messages: list[tuple[str, bytes]], rx: datetime) -> pl.DataFrame:
    rx_us = int(rx.timestamp() * 1_000_000)
    return pl.DataFrame(
        {
            "raw_id": list(range(1, len(messages) + 1)),
            "topic": [t for t, _ in messages],
            "payload": [p for _, p in messages],
            "rx_us": [rx_us + i for i in range(len(messages))],
        },
        schema={"raw_id": pl.Int64, "topic": pl.String, "payload": pl.Binary, "rx_us": pl.Int64},
    )


def test_batch_accounts_for_every_message() -> None:
    rx = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    specs = list(SENSOR_MODELS["th-sensor"])
    data = to_hex(encode_reply(1, encode_datapoints({"temperature": -12.5, "humidity": 40.1}, specs)))
    messages = [
        ("devices/a1b2c3d4/temperature", "27.93 °C".encode()),
        (
            "tele/f2-aabbccddee01/sensor-mode/J1/sensor-1",
            json.dumps({"timestamp": "2026-11-23 11:59:59.500000", "data": data}).encode(),
        ),
        ("stat/f2-aabbccddee01/access-control-mode/J2/strike-1", b"true"),
        ("stat/f2-aabbccddee01/door-sensors", b'{"door-1": true, "door-2": false}'),
        ("qs/v1/esp32-01/events", f'[{REFERENCE_004_EVENT}, {{"schema": 2}}]'.encode()),
        ("tele/f2-aabbccddee01/sensor-mode/J1/sensor-9", b'{"data": "01 03 00"}'),
        ("tele/f2-aabbccddee09/sensor-mode/J1/sensor-1", b'{"data": "01 03 00"}'),
        (
            "tele/f2-aabbccddee01/sensor-mode/J1/sensor-1",
            b'{"timestamp": "2026-11-23 11:00:00", "data": "01 03"}',
        ),
        ("devices/a1b2c3d4/humidity", b"\xff"),
        ("devices/a1b2c3d4/future", b'{"value": 1, "ts": "2030-01-01T00:00:00Z"}'),
    ]
    batch = decode_batch(raw_frame(messages, rx), catalog(), DecodeOptions())
    m = batch.measurements
    assert m.filter(pl.col("raw_id") == 1).select("metric", "unit", "value_num").row(0) == (
        "temperature",
        "°C",
        27.93,
    )
    f2 = dict(m.filter(pl.col("raw_id") == 2).select("metric", "value_num").iter_rows())
    assert f2 == {"J1.sensor-1.temperature": -12.5, "J1.sensor-1.humidity": 40.1}
    assert (
        m.filter(pl.col("raw_id") == 2)["ts"].to_list()
        == [datetime(2026, 11, 23, 11, 59, 59, 500000, tzinfo=UTC)] * 2
    )
    assert m.filter(pl.col("raw_id") == 3).select("metric", "value_num", "value_text").row(0) == (
        "J2.strike-1",
        1.0,
        "true",
    )
    assert sorted(m.filter(pl.col("raw_id") == 4)["metric"]) == ["door-sensors.door-1", "door-sensors.door-2"]
    future = m.filter(pl.col("raw_id") == 10)
    assert future["ts"][0] == rx + timedelta(microseconds=9), "an insane device clock falls back to arrival"
    assert batch.events.select("raw_id", "item", "event_id").rows() == [(5, 0, "esp32-01-1707523200000")]
    reasons = dict(
        (r, reason) for r, _, reason in batch.rejected.select("raw_id", "item", "reason").iter_rows()
    )
    assert reasons == {
        5: "unsupported_schema",
        6: "unmapped_sensor",
        7: "unknown_controller",
        8: "bad_frame",
        9: "not_utf8",
    }
    accounted = set(m["raw_id"]) | set(batch.events["raw_id"]) | set(batch.rejected["raw_id"])
    assert accounted == set(range(1, len(messages) + 1))


def test_validation_rejects_bad_device_ids_and_keeps_the_rest() -> None:
    rx = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    batch = decode_batch(
        raw_frame([("devices/ok/temp", b"1"), ("devices/bad id!/temp", b"2")], rx), F2Catalog()
    )
    valid, rejects = split_valid(batch.measurements, MEASUREMENT_SCHEMA)
    assert valid["raw_id"].to_list() == [1]
    assert rejects.select("raw_id", "stage").rows() == [(2, "validate")]
    assert "device_key" in rejects["detail"][0]
