"""Named bad inputs: (topic, payload, the `rejected.reason` the decoder gives). Each is one message that
yields exactly one rejection and no fact row under the default limits and the simulator's seeded F2 fleet.

`over_mqtt` is False where MQTT itself cannot carry the input (NUL in the topic, an empty topic): those
only reach the decoder through the stream or the raw archive. (A topic with a lone surrogate cannot even
be a polars string; `parse_topic` rejects it all the same.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from iot_core.formats.f2 import encode_reply, to_hex

PLAIN = "devices/bad-plain-01/temperature"
EVENTS = "qs/v1/bad-ev-01/events"
F2_SENSOR = "tele/f2-aabbccddee01/sensor-mode/J1/sensor-1"
F2_STRIKE = "stat/f2-aabbccddee01/access-control-mode/J2/strike-1"
F2_DOORS = "stat/f2-aabbccddee01/door-sensors"
F2_TS = "2025-01-15 10:30:00.000000"


@dataclass(frozen=True, slots=True)
class BadInput:
    name: str
    topic: str
    payload: bytes
    reason: str
    over_mqtt: bool = True


def _json(doc: object) -> bytes:
    # json.dumps writes NaN/Infinity, \u0000 and lone-surrogate escapes, and huge integers as given.
    return json.dumps(doc).encode()


def _event(**fields: object) -> bytes:
    doc: dict[str, object] = {
        "schema": 1,
        "event_id": "bad-ev-01-1",
        "device_id": "bad-ev-01",
        "event_type": "temperature",
    }
    doc.update(fields)
    return _json({k: v for k, v in doc.items() if v is not _DROP})


_DROP = object()
_GOOD_FRAME = to_hex(encode_reply(1, bytes.fromhex("09C4 0258")))
_BAD_CRC_FRAME = _GOOD_FRAME[:-2] + ("00" if not _GOOD_FRAME.endswith("00") else "01")
_DEEP = "[" * 100 + "]" * 100
_VERY_DEEP = "[" * 5000 + "]" * 5000

BAD_INPUTS: tuple[BadInput, ...] = (
    # --- topics ---
    BadInput("topic_unknown", "foo/bar", b"1", "unknown_topic"),
    BadInput("topic_plain_extra_segment", "devices/a/b/c", b"1", "unknown_topic"),
    BadInput("topic_plain_empty_metric", "devices/a/", b"1", "unknown_topic"),
    BadInput("topic_device_too_long", f"devices/{'d' * 300}/temperature", b"1", "field_too_large"),
    BadInput("topic_metric_too_long", f"devices/bad-plain-01/{'m' * 300}", b"1", "field_too_large"),
    BadInput("topic_event_device_too_long", f"qs/v1/{'d' * 300}/events", b"{}", "field_too_large"),
    BadInput("topic_nul", "devices/a\x00b/temperature", b"1", "nul_character", over_mqtt=False),
    BadInput("topic_empty", "", b"1", "malformed_entry", over_mqtt=False),
    # --- plain text payloads ---
    BadInput("plain_empty", PLAIN, b"", "empty_value"),
    BadInput("plain_blank", PLAIN, b"  \t ", "empty_value"),
    BadInput("plain_latin1_degree", PLAIN, b"23.5 \xb0C", "not_utf8"),
    BadInput("plain_encoded_surrogate", PLAIN, b"\xed\xa0\x80", "not_utf8"),
    BadInput("plain_nan", PLAIN, b"NaN", "not_finite"),
    BadInput("plain_negative_infinity", PLAIN, b"-inf", "not_finite"),
    BadInput("plain_huge_exponent", PLAIN, b"1e999", "number_out_of_range"),
    BadInput("plain_400_digits", PLAIN, b"9" * 400, "number_out_of_range"),
    BadInput("plain_nul_in_text", PLAIN, b"on\x00", "nul_character"),
    BadInput("plain_nul_alone", PLAIN, b"\x00", "nul_character"),
    BadInput("plain_text_too_long", PLAIN, b"x" * 300, "field_too_large"),
    BadInput("plain_unit_twice", PLAIN, "27.93 °C °C".encode(), "bad_unit"),
    BadInput("plain_payload_too_large", PLAIN, b"1" * (300 * 1024), "payload_too_large"),
    # --- plain JSON payloads ---
    BadInput("plain_json_broken", PLAIN, b"{nope", "bad_json"),
    BadInput("plain_json_missing_value", PLAIN, b'{"unit": "C"}', "missing_value"),
    BadInput("plain_json_value_object", PLAIN, b'{"value": {"a": 1}}', "bad_value"),
    BadInput("plain_json_value_empty", PLAIN, b'{"value": " "}', "empty_value"),
    BadInput("plain_json_nan", PLAIN, b'{"value": NaN}', "not_finite"),
    BadInput("plain_json_infinity", PLAIN, b'{"value": Infinity}', "not_finite"),
    BadInput("plain_json_negative_infinity", PLAIN, b'{"value": -Infinity}', "not_finite"),
    BadInput("plain_json_huge_float", PLAIN, b'{"value": 1e400}', "number_out_of_range"),
    BadInput("plain_json_huge_int", PLAIN, _json({"value": 10**400}), "number_out_of_range"),
    BadInput("plain_json_5000_digit_int", PLAIN, b'{"value": ' + b"7" * 5000 + b"}", "number_out_of_range"),
    BadInput("plain_json_nul_escape", PLAIN, _json({"value": "a\x00b"}), "nul_character"),
    BadInput("plain_json_surrogate", PLAIN, _json({"value": "\ud800"}), "unpaired_surrogate"),
    BadInput("plain_json_surrogate_key", PLAIN, _json({"value": 1, "\udc00": 2}), "unpaired_surrogate"),
    BadInput("plain_json_nul_in_unit", PLAIN, _json({"value": 1, "unit": "\x00"}), "nul_character"),
    BadInput("plain_json_unit_too_long", PLAIN, _json({"value": 1, "unit": "u" * 300}), "field_too_large"),
    BadInput("plain_json_unit_number", PLAIN, b'{"value": 1, "unit": 5}', "bad_unit"),
    BadInput("plain_json_ts_word", PLAIN, b'{"value": 1, "ts": "soon"}', "bad_ts"),
    BadInput(
        "plain_json_ts_overflow", PLAIN, _json({"value": 1, "ts": "0001-01-01T00:00:00+01:00"}), "bad_ts"
    ),
    BadInput("plain_json_deep", PLAIN, f'{{"value": 1, "x": {_DEEP}}}'.encode(), "json_too_deep"),
    BadInput("plain_json_very_deep", PLAIN, f'{{"value": 1, "x": {_VERY_DEEP}}}'.encode(), "json_too_deep"),
    # --- events ---
    BadInput("event_broken_json", EVENTS, b'{"schema": 1,', "bad_json"),
    BadInput("event_literal_nul", EVENTS, b'{"schema": 1\x00}', "nul_character"),
    BadInput("event_empty_array", EVENTS, b"[]", "bad_event"),
    BadInput("event_number", EVENTS, b"5", "bad_event"),
    BadInput("event_missing_schema", EVENTS, _event(schema=_DROP), "missing_schema"),
    BadInput("event_schema_2", EVENTS, _event(schema=2), "unsupported_schema"),
    BadInput("event_missing_event_id", EVENTS, _event(event_id=_DROP), "missing_event_id"),
    BadInput("event_missing_event_type", EVENTS, _event(event_type=_DROP), "missing_event_type"),
    BadInput("event_device_mismatch", EVENTS, _event(device_id="other"), "device_mismatch"),
    BadInput("event_id_too_long", EVENTS, _event(event_id="e" * 129), "bad_event_id"),
    BadInput("event_id_nul", EVENTS, _event(event_id="e\x00"), "nul_character"),
    BadInput("event_type_nul", EVENTS, _event(event_type="temp\x00"), "nul_character"),
    BadInput("event_type_surrogate", EVENTS, _event(event_type="\udfff"), "unpaired_surrogate"),
    BadInput("event_type_too_long", EVENTS, _event(event_type="t" * 300), "field_too_large"),
    BadInput("event_value_object", EVENTS, _event(value={"a": 1}), "bad_value"),
    BadInput("event_value_nan", EVENTS, _event(value=float("nan")), "not_finite"),
    BadInput("event_value_400_digits", EVENTS, _event(value=10**400), "number_out_of_range"),
    BadInput("event_value_text_nul", EVENTS, _event(value="open\x00"), "nul_character"),
    BadInput("event_unit_number", EVENTS, _event(unit=5), "bad_unit"),
    BadInput("event_unit_nul", EVENTS, _event(unit="\x00C"), "nul_character"),
    BadInput("event_ts_word", EVENTS, _event(ts_device="yesterday"), "bad_ts"),
    BadInput("event_meta_list", EVENTS, _event(meta=[1]), "bad_meta"),
    BadInput("event_meta_nan", EVENTS, _event(meta={"x": float("nan")}), "not_finite"),
    BadInput("event_meta_infinity", EVENTS, _event(meta={"x": float("inf")}), "not_finite"),
    BadInput(
        "event_meta_huge_float",
        EVENTS,
        _event(meta={"x": 1.5}).replace(b"1.5", b"1e999"),
        "number_out_of_range",
    ),
    BadInput("event_meta_nul_value", EVENTS, _event(meta={"x": "\x00"}), "nul_character"),
    BadInput("event_meta_nul_key", EVENTS, _event(meta={"\x00": 1}), "nul_character"),
    BadInput("event_meta_surrogate", EVENTS, _event(meta={"x": ["\ud83d"]}), "unpaired_surrogate"),
    BadInput("event_meta_too_large", EVENTS, _event(meta={"x": "m" * 20_000}), "field_too_large"),
    # --- F2 controllers ---
    BadInput(
        "f2_unknown_controller", "tele/f2-0000000000ff/sensor-mode/J1/sensor-1", b"{}", "unknown_controller"
    ),
    BadInput("f2_unmapped_sensor", "tele/f2-aabbccddee01/sensor-mode/J1/sensor-9", b"{}", "unmapped_sensor"),
    BadInput("f2_mode_mismatch", "tele/f2-aabbccddee01/relay-mode/J1/sensor-1", b"{}", "mode_mismatch"),
    BadInput("f2_broken_json", F2_SENSOR, b'{"timestamp": ', "bad_json"),
    BadInput("f2_missing_data", F2_SENSOR, _json({"timestamp": F2_TS}), "missing_data"),
    BadInput("f2_bad_crc", F2_SENSOR, _json({"timestamp": F2_TS, "data": _BAD_CRC_FRAME}), "bad_frame"),
    BadInput("f2_non_hex", F2_SENSOR, _json({"timestamp": F2_TS, "data": "zz"}), "bad_frame"),
    BadInput("f2_data_nul", F2_SENSOR, _json({"timestamp": F2_TS, "data": "01\x00"}), "nul_character"),
    BadInput("f2_timestamp_nan", F2_SENSOR, b'{"timestamp": NaN, "data": "01"}', "not_finite"),
    BadInput("f2_strike_not_boolean", F2_STRIKE, b'"open"', "bad_value"),
    BadInput("f2_doors_empty", F2_DOORS, b"{}", "bad_f2_payload"),
    BadInput("f2_doors_not_boolean", F2_DOORS, _json({"door-1": "open"}), "bad_value"),
    BadInput("f2_doors_nul_name", F2_DOORS, _json({"door\x00": True}), "nul_character"),
    BadInput("f2_doors_surrogate_name", F2_DOORS, _json({"door-\ud800": True}), "unpaired_surrogate"),
    BadInput("f2_doors_long_name", F2_DOORS, _json({"d" * 300: True}), "field_too_large"),
)
