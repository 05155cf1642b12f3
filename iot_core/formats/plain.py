"""Plain metrics (reference 000): `devices/{device_id}/{metric}` with the value as text or a JSON object."""

from __future__ import annotations

import json
from datetime import datetime, tzinfo

from iot_core.formats.errors import DecodeError
from iot_core.formats.timestamps import parse_device_ts
from iot_core.formats.values import Value, json_scalar, parse_text_value


def decode_plain(text: str, default_tz: tzinfo) -> tuple[Value, datetime | None]:
    """The value and the device timestamp (None: the payload has none, arrival time applies)."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return parse_text_value(stripped), None
    try:
        obj = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise DecodeError("bad_json", f"payload looks like JSON but is not: {exc.msg} at {exc.pos}") from exc
    if "value" not in obj:
        raise DecodeError("missing_value", 'JSON payload has no "value" field')
    value = json_scalar(obj["value"])
    unit = obj.get("unit")
    if unit is not None and not isinstance(unit, str):
        raise DecodeError("bad_unit", f"unit must be a string, got {type(unit).__name__}")
    ts = parse_device_ts(obj["ts"], default_tz) if obj.get("ts") is not None else None
    return Value(value.value_num, value.value_text, unit or value.unit), ts
