"""Simulated event devices: `qs/v1/{device_id}/events` with JSON events (sometimes an array of them), with
device timestamps in the forms devices send, and the deliberately bad events the decoder rejects.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo

from simulator.device_clock import EPOCH, MS, Stamps, iso_ms_z, truncate_ms
from simulator.expected import ExpectedEvent, SentMessage
from simulator.message_kind import MessageKind

EVENT_SCHEMA = 1
EVENT_ARRAY_SHARE = 0.1  # share of good event messages that are a JSON array of 2-3 events
EVENT_MAX_AGE_S = 3600.0  # ts_device lies this far back at most: sane (past, within the last day)


class EventDevices(MessageKind):
    """`qs/v1/{device_id}/events` with reference-004 JSON events (sometimes an array of them)."""

    kind = "event"

    def __init__(
        self, rng: random.Random, stamps: Stamps, qos: int, devices: int, naive_tz: tzinfo = UTC
    ) -> None:
        super().__init__(rng, stamps, qos)
        self.device_ids: tuple[str, ...] = tuple(f"esp32-{n:02d}" for n in range(1, devices + 1))
        self.naive_tz = naive_tz

    def topic(self, device_id: str) -> str:
        return f"qs/v1/{device_id}/events"

    def event_id(self, device_id: str, now: datetime) -> str:
        """`<device>-<epoch ms>` as devices name their events; bumped per device so that it stays unique."""
        ms = self.stamps.next(("event", device_id), truncate_ms(now), MS)
        return f"{device_id}-{(ms - EPOCH) // MS}"

    def ts_device(self, now: datetime) -> tuple[str | None, datetime | None]:
        """What is sent and the instant it means: ISO with Z, with an offset, naive (device zone) or none."""
        ts = truncate_ms(now - timedelta(seconds=self.rng.uniform(0, EVENT_MAX_AGE_S)))
        form = self.rng.random()
        if form < 0.45:
            return iso_ms_z(ts), ts
        if form < 0.6:
            offset = timezone(timedelta(hours=self.rng.choice((-5, 1, 2, 9))))
            return ts.astimezone(offset).isoformat(timespec="milliseconds"), ts
        if form < 0.8:
            return ts.astimezone(self.naive_tz).replace(tzinfo=None).isoformat(timespec="milliseconds"), ts
        return None, None

    def event(self, device_id: str, now: datetime) -> tuple[dict[str, object], ExpectedEvent]:
        doc: dict[str, object] = {
            "schema": EVENT_SCHEMA,
            "event_id": self.event_id(device_id, now),
            "device_id": device_id,
        }
        value: object = None
        unit: str | None = None
        choice = self.rng.randrange(6)
        if choice == 0:
            event_type, value, unit = "temperature", round(self.rng.uniform(-10, 35), 2), "C"
        elif choice == 1:
            event_type, value, unit = "humidity", round(self.rng.uniform(20, 95), 1), "%"
        elif choice == 2:
            event_type, value, unit = "battery", self.rng.randint(5, 100), "%"
        elif choice == 3:
            event_type = "button_press"
        elif choice == 4:
            event_type, value = "door", self.rng.choice(("open", "closed"))
        else:
            event_type, value = "status", self.rng.choice(("online", "rebooted", "low_battery"))
        doc["event_type"] = event_type
        if value is not None:
            doc["value"] = value
        if unit is not None:
            doc["unit"] = unit
        ts_text, ts = self.ts_device(now)
        if ts_text is not None:
            doc["ts_device"] = ts_text
        meta: dict[str, object] = {}
        meta_form = self.rng.random()
        if meta_form < 0.4:
            meta = {
                "sensor": self.rng.choice(("dht22", "bme280", "sht31")),
                "location": self.rng.choice(("living_room", "kitchen", "garage")),
            }
            doc["meta"] = meta
        elif meta_form < 0.6:
            meta = {"rssi": self.rng.randint(-90, -40), "fw": "1.4.2"}
            doc["meta"] = meta
        elif meta_form < 0.7:
            doc["meta"] = {}
        expected = ExpectedEvent(
            device_key=device_id,
            event_id=str(doc["event_id"]),
            event_type=event_type,
            schema=EVENT_SCHEMA,
            value_num=float(value) if isinstance(value, int | float) else None,
            value_text=value if isinstance(value, str) else None,
            unit=unit,
            ts_device=ts,
            meta=dict(meta),
        )
        return doc, expected

    def good(self, now: datetime) -> SentMessage:
        device_id = self.rng.choice(self.device_ids)
        if self.rng.random() < EVENT_ARRAY_SHARE:
            pairs = [self.event(device_id, now) for _ in range(self.rng.randint(2, 3))]
            payload: object = [doc for doc, _ in pairs]
            expected = tuple(event for _, event in pairs)
        else:
            payload, event = self.event(device_id, now)
            expected = (event,)
        return self.sent(self.topic(device_id), json.dumps(payload).encode(), events=expected)

    def broken(
        self, reason: str, now: datetime, change: Callable[[dict[str, object]], str | None]
    ) -> SentMessage:
        """One event with exactly one defect, sent alone so that it makes exactly one rejection.

        `change` edits the event in place, or returns the payload text to send instead.
        """
        device_id = self.rng.choice(self.device_ids)
        doc, _ = self.event(device_id, now)
        text = change(doc)
        payload = json.dumps(doc) if text is None else text
        return self.rejected(reason, self.topic(device_id), payload.encode())

    def bad_invalid_json(self, now: datetime) -> SentMessage:
        def cut(doc: dict[str, object]) -> str:
            text = json.dumps(doc)
            return text[: self.rng.randrange(1, len(text))]  # an object cut before its end is never JSON

        return self.broken("invalid_json", now, cut)

    def bad_missing_event_type(self, now: datetime) -> SentMessage:
        return self.broken("missing_event_type", now, lambda doc: doc.pop("event_type") and None)

    def bad_missing_event_id(self, now: datetime) -> SentMessage:
        return self.broken("missing_event_id", now, lambda doc: doc.pop("event_id") and None)

    def bad_device_mismatch(self, now: datetime) -> SentMessage:
        def other(doc: dict[str, object]) -> None:
            others = [d for d in self.device_ids if d != doc["device_id"]] or ["esp32-00"]
            doc["device_id"] = self.rng.choice(others)

        return self.broken("device_mismatch", now, other)

    def bad_schema_2(self, now: datetime) -> SentMessage:
        return self.broken("schema_2", now, lambda doc: doc.update(schema=2))

    def bad_bad_ts_device(self, now: datetime) -> SentMessage:
        unreadable = self.rng.choice(("yesterday", "2025-13-45T25:61:00Z", "10/02/2024 00:00", 1707523200))
        return self.broken("bad_ts_device", now, lambda doc: doc.update(ts_device=unreadable))

    def bad_value_object(self, now: datetime) -> SentMessage:
        return self.broken("value_object", now, lambda doc: doc.update(value={"reading": 23.5, "unit": "C"}))
