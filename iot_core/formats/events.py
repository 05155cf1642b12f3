"""Events: `qs/v1/{device_id}/events`, a JSON object or an array of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from iot_core.formats.errors import DecodeError
from iot_core.formats.guards import DEFAULT_LIMITS, Limits, check_field, check_json, dump_json, parse_json
from iot_core.formats.timestamps import parse_device_ts
from iot_core.formats.values import json_scalar

SUPPORTED_SCHEMA = 1
MAX_EVENT_ID = 128


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    device_id: str
    schema: int
    event_type: str
    value_num: float | None
    value_text: str | None
    unit: str | None
    ts_device: datetime | None
    meta: dict = field(default_factory=dict)
    meta_json: str = "{}"  # `meta` as compact, key-sorted JSON that jsonb accepts


def split_events(text: str) -> list[object]:
    """The payload's elements; a bad payload as a whole raises, a bad value inside an element does not."""
    doc = parse_json(text, "event payload")
    if isinstance(doc, dict):
        return [doc]
    if isinstance(doc, list) and doc:
        return doc
    raise DecodeError("bad_event", "event payload must be a JSON object or a non-empty array of objects")


def _required_str(obj: dict, name: str, limits: Limits) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value.strip():
        raise DecodeError(f"missing_{name}", f"required field {name!r} must be a non-empty string")
    return check_field(value, name, limits)


def decode_event(
    obj: object, topic_device: str, default_tz: tzinfo, limits: Limits = DEFAULT_LIMITS
) -> Event:
    """One element of an event payload; every stored field is checked for what PostgreSQL refuses."""
    if not isinstance(obj, dict):
        raise DecodeError("bad_event", f"an event must be a JSON object, got {type(obj).__name__}")
    schema = obj.get("schema")
    if "schema" not in obj:
        raise DecodeError("missing_schema", "required field 'schema' is missing")
    if schema != SUPPORTED_SCHEMA or isinstance(schema, bool):
        raise DecodeError("unsupported_schema", f"schema {schema!r} is not supported (expected 1)"[:200])
    event_id = _required_str(obj, "event_id", limits)
    if len(event_id) > MAX_EVENT_ID:
        raise DecodeError("bad_event_id", f"event_id of {len(event_id)} characters (max {MAX_EVENT_ID})")
    device_id = _required_str(obj, "device_id", limits)
    if device_id != topic_device:
        raise DecodeError("device_mismatch", f"payload device_id {device_id!r} != topic's {topic_device!r}")
    event_type = _required_str(obj, "event_type", limits)
    value = json_scalar(obj["value"], "value", limits) if obj.get("value") is not None else None
    unit = obj.get("unit")
    if unit is not None and not isinstance(unit, str):
        raise DecodeError("bad_unit", f"unit must be a string, got {type(unit).__name__}")
    if unit is not None:
        check_field(unit, "unit", limits)
    ts_raw = obj.get("ts_device")
    ts_device = parse_device_ts(ts_raw, default_tz) if ts_raw is not None else None
    meta = obj.get("meta")
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        raise DecodeError("bad_meta", f"meta must be a JSON object, got {type(meta).__name__}")
    check_json(meta, "meta")
    return Event(
        event_id=event_id,
        device_id=device_id,
        schema=SUPPORTED_SCHEMA,
        event_type=event_type,
        value_num=value.value_num if value else None,
        value_text=value.value_text if value else None,
        unit=unit,
        ts_device=ts_device,
        meta=meta,
        meta_json=dump_json(meta, "meta", limits.max_meta_bytes),
    )
