"""Plain metrics: `devices/{device_id}/{metric}` with the value as text or a JSON object."""

from __future__ import annotations

from datetime import datetime, tzinfo

from iot_core.formats.errors import DecodeError
from iot_core.formats.guards import DEFAULT_LIMITS, Limits, check_chars, check_field, load_json
from iot_core.formats.timestamps import parse_device_ts
from iot_core.formats.values import Value, json_scalar, parse_text_value


def decode_plain(
    text: str, default_tz: tzinfo, limits: Limits = DEFAULT_LIMITS
) -> tuple[Value, datetime | None]:
    """The value and the device timestamp (None: the payload has none, arrival time applies)."""
    stripped = check_chars(text, "payload").strip()
    if not stripped.startswith("{"):
        return parse_text_value(stripped, limits), None
    obj = load_json(stripped, "payload that looks like JSON")
    assert isinstance(obj, dict)  # valid JSON that starts with "{" is an object
    if "value" not in obj:
        raise DecodeError("missing_value", 'JSON payload has no "value" field')
    value = json_scalar(obj["value"], "value", limits)
    unit = obj.get("unit")
    if unit is not None and not isinstance(unit, str):
        raise DecodeError("bad_unit", f"unit must be a string, got {type(unit).__name__}")
    if unit is not None:
        check_field(unit, "unit", limits)
    ts = parse_device_ts(obj["ts"], default_tz) if obj.get("ts") is not None else None
    return Value(value.value_num, value.value_text, unit or value.unit), ts
