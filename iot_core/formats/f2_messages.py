"""F2 controller messages: Modbus sensor replies and status booleans, resolved through the metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from iot_core.formats.errors import DecodeError
from iot_core.formats.f2 import DatapointSpec, FrameError, decode_datapoints
from iot_core.formats.guards import DEFAULT_LIMITS, Limits, check_field, load_json
from iot_core.formats.timestamps import parse_device_ts
from iot_core.formats.topics import Topic
from iot_core.formats.values import Value, json_boolean


@dataclass(frozen=True, slots=True)
class SensorEntry:
    mode: str
    model: str
    datapoints: tuple[DatapointSpec, ...] = ()  # empty for status outputs such as door strikes


@dataclass(slots=True)
class F2Catalog:
    """Which sensor sits where: mac -> (port, component) -> sensor. Loaded from the metadata tables."""

    sensors: dict[str, dict[tuple[str, str], SensorEntry]] = field(default_factory=dict)

    def add(self, mac: str, port: str, component: str, entry: SensorEntry) -> None:
        self.sensors.setdefault(mac, {})[(port, component)] = entry

    def lookup(self, topic: Topic) -> SensorEntry:
        controller = self.sensors.get(topic.mac)
        if controller is None:
            raise DecodeError("unknown_controller", f"no F2 controller with MAC {topic.mac} in the metadata")
        entry = controller.get((topic.port, topic.component))
        if entry is None:
            raise DecodeError(
                "unmapped_sensor", f"controller {topic.mac} has no sensor {topic.port}/{topic.component}"
            )
        if entry.mode != topic.mode:
            raise DecodeError(
                "mode_mismatch", f"{topic.port} of {topic.mac} is in {entry.mode}, topic says {topic.mode}"
            )
        return entry

    def knows(self, mac: str) -> bool:
        return mac in self.sensors


@dataclass(frozen=True, slots=True)
class F2Reading:
    metric: str
    unit: str
    value: Value
    ts: datetime | None


def decode_f2_sensor(topic: Topic, text: str, catalog: F2Catalog, default_tz: tzinfo) -> list[F2Reading]:
    entry = catalog.lookup(topic)
    prefix = f"{topic.port}.{topic.component}"
    doc = load_json(text, "F2 payload")
    if not entry.datapoints:  # a status output: the payload is a JSON boolean
        return [F2Reading(prefix, "", json_boolean(doc, prefix), None)]
    if not isinstance(doc, dict):
        raise DecodeError("bad_f2_payload", "F2 sensor payload must be a JSON object with timestamp and data")
    data = doc.get("data")
    if not isinstance(data, str):
        raise DecodeError("missing_data", 'F2 sensor payload has no "data" hex string')
    ts = parse_device_ts(doc["timestamp"], default_tz) if doc.get("timestamp") is not None else None
    try:
        values = decode_datapoints(data, list(entry.datapoints))
    except FrameError as exc:
        raise DecodeError("bad_frame", str(exc)) from exc
    return [F2Reading(f"{prefix}.{spec.name}", spec.unit, Value(value, None), ts) for spec, value in values]


def decode_f2_doors(
    topic: Topic, text: str, catalog: F2Catalog, limits: Limits = DEFAULT_LIMITS
) -> list[F2Reading]:
    if not catalog.knows(topic.mac):
        raise DecodeError("unknown_controller", f"no F2 controller with MAC {topic.mac} in the metadata")
    doc = load_json(text, "F2 payload")
    if not isinstance(doc, dict) or not doc:
        raise DecodeError("bad_f2_payload", "door-sensors payload must be a JSON object of door -> boolean")
    return [
        F2Reading(
            check_field(f"door-sensors.{door}", "door name", limits),
            "",
            json_boolean(state, f"door {door!r}"),
            None,
        )
        for door, state in sorted(doc.items())
    ]
