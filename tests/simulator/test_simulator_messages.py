"""The simulator's messages: deterministic per seed, all formats and defects, and exactly what they expect.

The strongest check runs every generated message through the pipeline's own pure decoder and compares its
output with the expectation the message carries, so the end-to-end tests can rely on those expectations.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dagster_project.lib.validation import EVENT_SCHEMA, MEASUREMENT_SCHEMA, split_valid
from iot_core.formats.batch import DecodeOptions, decode_batch
from iot_core.formats.f2 import (
    DatapointSpec,
    datapoint_value,
    encode_datapoints,
    encode_reply,
    parse_hex,
    parse_reply,
    to_hex,
)
from iot_core.rows import DECODE_INPUT
from simulator.expected import KINDS, REJECT_REASONS, SentMessage
from simulator.f2_devices import F2_VALUE_RANGES, MODBUS_SENSORS
from simulator.fleet import F2_CONTROLLERS, SENSOR_MODELS
from simulator.messages import MessageFactory
from tests.support.fleet import fleet_catalog

T0 = datetime(2026, 11, 23, 15, 13, 10, 543400, tzinfo=UTC)
ARRIVAL_DELAY = timedelta(seconds=2)


def clock(n: int, step: timedelta = timedelta(milliseconds=7)) -> list[datetime]:
    return [T0 + i * step for i in range(n)]


def generate(
    seed: int, n: int, *, step: timedelta = timedelta(milliseconds=7), **kwargs: object
) -> list[SentMessage]:
    factory = MessageFactory(seed, **kwargs)  # type: ignore[arg-type]
    return [factory.next(now) for now in clock(n, step)]


def decode(
    messages: list[SentMessage], step: timedelta, default_tz: tzinfo = UTC
) -> tuple[pl.DataFrame, ...]:
    """The decoder's measurements, events and rejections; message i arrives 2 s after it was made."""
    arrivals = [int((now + ARRIVAL_DELAY).timestamp() * 1_000_000) for now in clock(len(messages), step)]
    raw = pl.DataFrame(
        {
            "raw_id": list(range(len(messages))),
            "topic": [m.topic for m in messages],
            "payload": [m.payload for m in messages],
            "rx_us": arrivals,
        },
        schema=DECODE_INPUT.without("arrived_at").schema,
    )
    batch = decode_batch(raw, fleet_catalog(), DecodeOptions(default_tz=default_tz))
    return batch.measurements, batch.events, batch.rejected


def assert_decoded_as_expected(
    messages: list[SentMessage], step: timedelta, default_tz: tzinfo = UTC
) -> None:
    measurements, events, rejected = decode(messages, step, default_tz)
    by_raw: dict[str, dict[int, list[tuple]]] = {"m": {}, "e": {}, "r": {}}
    for row in measurements.iter_rows(named=True):
        by_raw["m"].setdefault(row["raw_id"], []).append(
            (row["device_key"], row["metric"], row["unit"], row["value_num"], row["value_text"], row["ts"])
        )
    for row in events.iter_rows(named=True):
        by_raw["e"].setdefault(row["raw_id"], []).append(
            (
                row["device_key"],
                row["event_id"],
                row["event_type"],
                row["schema"],
                row["value_num"],
                row["value_text"],
                row["unit"],
                row["ts_device"],
                json.loads(row["meta"]),
            )
        )
    for row in rejected.iter_rows(named=True):
        by_raw["r"].setdefault(row["raw_id"], []).append(row["reason"])
    for raw_id, (message, now) in enumerate(zip(messages, clock(len(messages), step), strict=True)):
        where = f"message {raw_id} {message.topic} {message.payload[:80]!r}"
        if message.bad:
            assert by_raw["r"].get(raw_id) == [REJECT_REASONS[message.kind][message.reason]], where
            assert raw_id not in by_raw["m"] and raw_id not in by_raw["e"], where
            continue
        assert raw_id not in by_raw["r"], f"{where}: rejected {by_raw['r'].get(raw_id)}"
        arrival = now + ARRIVAL_DELAY
        expected_m = [
            (r.device_key, r.metric, r.unit, r.value_num, r.value_text, r.ts or arrival)
            for r in message.readings
        ]
        expected_e = [
            (
                e.device_key,
                e.event_id,
                e.event_type,
                e.schema,
                e.value_num,
                e.value_text,
                e.unit,
                e.ts_device,
                e.meta,
            )
            for e in message.events
        ]
        assert by_raw["m"].get(raw_id, []) == expected_m, where
        assert by_raw["e"].get(raw_id, []) == expected_e, where
    # and nothing the messages expect would fail the pipeline's validation
    assert split_valid(measurements, MEASUREMENT_SCHEMA)[1].is_empty()
    assert split_valid(events, EVENT_SCHEMA)[1].is_empty()


def test_same_seed_same_messages_other_seed_other_messages() -> None:
    assert generate(7, 300, bad_share=0.2) == generate(7, 300, bad_share=0.2)
    assert generate(7, 300, bad_share=0.2) != generate(8, 300, bad_share=0.2)


def test_large_sample_has_every_kind_every_defect_and_the_bad_share() -> None:
    messages = generate(11, 6000, bad_share=0.2)
    kinds = Counter(m.kind for m in messages)
    assert set(kinds) == set(KINDS) and min(kinds.values()) > 1500
    defects = {(m.kind, m.reason) for m in messages if m.bad}
    assert defects == {(kind, reason) for kind, reasons in REJECT_REASONS.items() for reason in reasons}
    assert sum(m.bad for m in messages) / len(messages) == pytest.approx(0.2, abs=0.02)
    for m in messages:
        assert m.bad == bool(m.reason)
        assert m.bad == (not m.readings and not m.events), m
        assert m.qos == 1


def test_kinds_and_zero_bad_share_are_honoured() -> None:
    messages = generate(3, 500, kinds=("f2",), bad_share=0.0, qos=0)
    assert {m.kind for m in messages} == {"f2"}
    assert not any(m.bad for m in messages)
    assert {m.qos for m in messages} == {0}
    assert all(m.bad for m in generate(3, 200, bad_share=1.0))


@pytest.mark.parametrize(
    "kwargs", [{"kinds": ()}, {"kinds": ("plain", "mqtt")}, {"bad_share": 1.5}, {"devices": 0}]
)
def test_factory_refuses_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        MessageFactory(1, **kwargs)


def test_the_decoder_makes_of_every_message_what_it_expects() -> None:
    step = timedelta(milliseconds=3)
    assert_decoded_as_expected(generate(5, 4000, step=step, bad_share=0.15, devices=4), step)


def test_naive_device_times_follow_the_configured_zone() -> None:
    step = timedelta(seconds=1)
    berlin = ZoneInfo("Europe/Berlin")
    messages = generate(6, 600, step=step, kinds=("event", "f2"), bad_share=0.0, naive_tz=berlin)
    naive = [m for m in messages if m.kind == "f2" and b'"timestamp"' in m.payload]
    # Berlin is UTC+1 in November
    assert naive and json.loads(naive[0].payload)["timestamp"].startswith("2026-11-23 16:")
    assert_decoded_as_expected(messages, step, default_tz=berlin)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**63))
def test_any_seed_decodes_as_expected(seed: int) -> None:
    step = timedelta(milliseconds=1)
    assert_decoded_as_expected(generate(seed, 60, step=step, bad_share=0.3, devices=2), step)


def test_f2_frames_round_trip_to_the_expected_values_including_negatives() -> None:
    messages = [m for m in generate(21, 3000, kinds=("f2",), bad_share=0.0) if b'"data"' in m.payload]
    seen: dict[str, list[float]] = {}
    for message in messages:
        topic = message.topic.split("/")
        sensor = next(s for s in MODBUS_SENSORS if (s.port, s.component) == (topic[3], topic[4]))
        assert topic[0] in ("tele", "stat") and topic[2] == sensor.mode
        reply = parse_reply(parse_hex(json.loads(message.payload)["data"]))
        assert reply.address == sensor.modbus_address
        specs = SENSOR_MODELS[sensor.model]
        assert [(r.metric, r.unit, r.value_num) for r in message.readings] == [
            (f"{sensor.port}.{sensor.component}.{spec.name}", spec.unit, datapoint_value(reply.data, spec))
            for spec in specs
        ]
        for spec, reading in zip(specs, message.readings, strict=True):
            low, high = F2_VALUE_RANGES[spec.name]
            assert low <= reading.value_num <= high
            assert reading.value_num == round(reading.value_num, spec.decimals)
            seen.setdefault(f"{sensor.model}.{spec.name}", []).append(reading.value_num)
    signed = {
        f"{model}.{spec.name}" for model, specs in SENSOR_MODELS.items() for spec in specs if spec.signed
    }
    assert signed == {"th-sensor.temperature", "power-meter.active_power", "co2-sensor.temperature"}
    for name in signed:
        assert min(seen[name]) < 0 < max(seen[name]), name


def test_f2_message_shapes() -> None:
    messages = generate(22, 2000, kinds=("f2",), bad_share=0.0)
    macs = {c.mac for c in F2_CONTROLLERS}
    shapes = Counter()
    for m in messages:
        parts = m.topic.split("/")
        assert parts[1].removeprefix("f2-") in macs
        assert all(r.device_key == parts[1] for r in m.readings)
        if parts[2] == "door-sensors":
            shapes["doors"] += 1
            assert m.topic.startswith("stat/") and set(json.loads(m.payload)) == {"door-1", "door-2"}
            assert [r.metric for r in m.readings] == ["door-sensors.door-1", "door-sensors.door-2"]
        elif parts[4] == "strike-1":
            shapes["strike"] += 1
            assert m.topic == f"stat/{parts[1]}/access-control-mode/J2/strike-1"
            assert json.loads(m.payload) in (True, False)
            [reading] = m.readings
            assert (reading.metric, reading.unit, reading.ts) == ("J2.strike-1", "", None)
            assert (reading.value_num, reading.value_text) in ((1.0, "true"), (0.0, "false"))
        else:
            shapes["modbus"] += 1
            doc = json.loads(m.payload)
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", doc["timestamp"])
            assert re.fullmatch(r"([0-9A-F]{2} )+[0-9A-F]{2}", doc["data"])
            sent_ts = datetime.fromisoformat(doc["timestamp"]).replace(tzinfo=UTC)
            assert {r.ts for r in m.readings} == {sent_ts}
    assert min(shapes.values()) > 200 and len(shapes) == 3


def test_plain_payload_forms_and_readings() -> None:
    messages = generate(31, 3000, kinds=("plain",), bad_share=0.0, devices=5)
    devices = {m.topic.split("/")[1] for m in messages}
    assert len(devices) == 5 and all(re.fullmatch(r"[0-9a-f]{8}", d) for d in devices)
    forms = Counter()
    for m in messages:
        [reading] = m.readings
        text = m.payload.decode()
        assert m.topic == f"devices/{reading.device_key}/{reading.metric}"
        if text.startswith("{"):
            doc = json.loads(text)
            forms["json_ts" if "ts" in doc else "json"] += 1
            assert reading.unit == doc.get("unit", "")
            assert (reading.ts is None) == ("ts" not in doc)
            if "ts" in doc:
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"])
        elif text.lower() in ("true", "false", "on", "off"):
            forms["boolean"] += 1
            word = text.lower()
            assert (reading.value_num, reading.value_text) == (float(word in ("true", "on")), word)
        elif re.fullmatch(r"-?\d+(\.\d+)?", text):
            forms["number"] += 1
            assert (reading.value_num, reading.unit, reading.ts) == (float(text), "", None)
        elif re.fullmatch(r"-?\d+(\.\d+)? \S+", text):
            forms["number_unit"] += 1
            number, unit = text.split(" ")
            assert (reading.value_num, reading.unit) == (float(number), unit)
        else:
            forms["state"] += 1
            assert (reading.value_num, reading.value_text) == (None, text)
        if reading.value_num is not None and reading.value_text is None:
            assert reading.value_num == round(reading.value_num, 2)
    assert set(forms) == {"json", "json_ts", "boolean", "number", "number_unit", "state"}
    assert any(m.payload.endswith(" °C".encode()) for m in messages)


def test_device_timestamps_and_event_ids_are_unique_even_when_the_clock_stands_still() -> None:
    messages = generate(41, 3000, step=timedelta(0), bad_share=0.0, devices=2)
    keys = [(r.device_key, r.metric, r.ts) for m in messages for r in m.readings if r.ts is not None]
    assert len(keys) > 500 and len(set(keys)) == len(keys)
    ids = [e.event_id for m in messages for e in m.events]
    assert len(ids) > 500 and len(set(ids)) == len(ids)


def test_events_follow_reference_004() -> None:
    messages = generate(51, 3000, step=timedelta(0), kinds=("event",), bad_share=0.0, devices=3)
    arrays = 0
    for m in messages:
        device = m.topic.split("/")[2]
        assert m.topic == f"qs/v1/{device}/events" and re.fullmatch(r"esp32-0[1-3]", device)
        doc = json.loads(m.payload)
        if isinstance(doc, list):
            arrays += 1
            assert 2 <= len(doc) <= 3
        for element, event in zip(doc if isinstance(doc, list) else [doc], m.events, strict=True):
            assert element["schema"] == 1 and element["device_id"] == device == event.device_key
            assert element["event_id"] == event.event_id and element["event_type"] == event.event_type
            assert event.meta == element.get("meta", {})
            if event.ts_device is not None:
                assert T0 - timedelta(days=1) < event.ts_device <= T0
    assert 150 < arrays < 450


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_datapoints_encode_and_decode_to_the_same_values(data: st.DataObject) -> None:
    specs: list[DatapointSpec] = []
    values: dict[str, float] = {}
    offset = 0
    for n in range(data.draw(st.integers(1, 4))):
        length = data.draw(st.sampled_from([1, 2, 4]))
        signed = data.draw(st.booleans())
        decimals = data.draw(st.integers(0, 3))
        spec = DatapointSpec(f"dp{n}", offset, length, signed, decimals, "")
        bits = 8 * length
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        raw = data.draw(st.integers(low, high))
        values[spec.name] = raw / 10**decimals if decimals else float(raw)
        specs.append(spec)
        offset += length
    address = data.draw(st.integers(1, 247))
    reply = parse_reply(parse_hex(to_hex(encode_reply(address, encode_datapoints(values, specs)))))
    assert reply.address == address
    assert {spec.name: datapoint_value(reply.data, spec) for spec in specs} == values
