"""What the pipeline is expected to make of each simulated message.

Every message the simulator sends carries its expected fact rows (or the fact that it must be rejected),
so an end-to-end test can compare the database with what was sent instead of with hand-written numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

KINDS: tuple[str, ...] = ("plain", "event", "f2")


@dataclass(frozen=True, slots=True)
class ExpectedReading:
    """One row of `measurements`."""

    device_key: str
    metric: str
    unit: str  # as sent, '' when none (stored in its canonical spelling: iot_core.formats.units)
    value_num: float | None
    value_text: str | None
    ts: datetime | None  # UTC-aware device timestamp; None: the arrival time is used


@dataclass(frozen=True, slots=True)
class ExpectedEvent:
    """One row of `events`."""

    device_key: str
    event_id: str
    event_type: str
    schema: int
    value_num: float | None
    value_text: str | None
    unit: str | None  # as sent (stored in its canonical spelling)
    ts_device: datetime | None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SentMessage:
    """One MQTT message and its expected outcome.

    `bad` messages must end wholly in `rejected`: exactly one rejection and no fact rows.
    """

    kind: str  # 'plain' | 'event' | 'f2'
    topic: str
    payload: bytes
    qos: int
    bad: bool
    reason: str  # for bad ones: the deliberate defect (a key of REJECT_REASONS); '' for good ones
    readings: tuple[ExpectedReading, ...] = ()
    events: tuple[ExpectedEvent, ...] = ()


# The defects the simulator makes, per kind, and the `rejected.reason` the decoder gives each of them.
REJECT_REASONS: dict[str, dict[str, str]] = {
    "plain": {
        "empty": "empty_value",
        "not_utf8": "not_utf8",
        "not_finite": "not_finite",
        "missing_value": "missing_value",
        "text_too_long": "field_too_large",
        "topic_segments": "unknown_topic",
    },
    "event": {
        "invalid_json": "bad_json",
        "missing_event_type": "missing_event_type",
        "missing_event_id": "missing_event_id",
        "device_mismatch": "device_mismatch",
        "schema_2": "unsupported_schema",
        "bad_ts_device": "bad_ts",
        "value_object": "bad_value",
    },
    "f2": {
        "crc": "bad_frame",
        "non_hex": "bad_frame",
        "byte_count": "bad_frame",
        "unknown_component": "unmapped_sensor",
        "unknown_controller": "unknown_controller",
        "missing_data": "missing_data",
    },
}
