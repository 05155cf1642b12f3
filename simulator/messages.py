"""Pure generation of simulated device messages in the three formats, each with its expected outcome.

No I/O and no clock of its own: the caller passes `now`, so a seed and a sequence of times give the same
messages every time (tests), while a real run passes the wall clock. Device timestamps and event ids are
strictly increasing per key, because the database keys readings by device + metric + ts and events by
event_id: two messages that collided there would be stored as one and the end-to-end count would not add up.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo

from iot_core.formats.f2 import DatapointSpec, crc16_modbus, encode_datapoints, encode_reply, to_hex
from simulator.expected import KINDS, REJECT_REASONS, ExpectedEvent, ExpectedReading, SentMessage
from simulator.fleet import DOORS, F2_CONTROLLERS, F2_SENSORS, SENSOR_MODELS, F2Controller, F2Sensor

# metric -> (unit, low, high, decimals); values are rounded so that their text form round-trips exactly
PLAIN_METRICS: dict[str, tuple[str, float, float, int]] = {
    "temperature": ("°C", -10.0, 35.0, 2),
    "humidity": ("%", 20.0, 95.0, 1),
    "pressure": ("hPa", 960.0, 1045.0, 2),
    "heart_rate": ("bpm", 48, 150, 0),
    "battery": ("%", 5, 100, 0),
}
STATE_METRIC = "state"  # short text states
STATE_WORDS = ("idle", "heating", "cooling", "standby", "charging")
SWITCH_METRIC = "relay"  # boolean words; the decoder stores 1/0 and the lowercase word
BOOLEAN_WORDS = ("true", "false", "on", "off", "ON", "Off")
_BOOLEAN_NUM = {"true": 1.0, "false": 0.0, "on": 1.0, "off": 0.0}

# datapoint name -> plausible (low, high) in the datapoint's unit; signed ones include negative values
F2_VALUE_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (-15.0, 35.0),
    "humidity": (20.0, 95.0),
    "voltage": (215.0, 245.0),
    "current": (0.0, 16.0),
    "active_power": (-3000.0, 3500.0),  # negative: export to the grid
    "co2": (400.0, 2000.0),
}
MODBUS_SENSORS: tuple[F2Sensor, ...] = tuple(s for s in F2_SENSORS if s.model in SENSOR_MODELS)
UNKNOWN_F2_SLOTS: tuple[tuple[str, str], ...] = (("J4", "sensor-9"), ("J1", "sensor-7"), ("J3", "sensor-4"))

EVENT_SCHEMA = 1
EVENT_ARRAY_SHARE = 0.1  # share of good event messages that are a JSON array of 2-3 events
EVENT_MAX_AGE_S = 3600.0  # ts_device lies this far back at most: sane (past, within the last day)

_MS = timedelta(milliseconds=1)
_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _truncate_ms(ts: datetime) -> datetime:
    return ts.replace(microsecond=ts.microsecond // 1000 * 1000)


def _iso_ms_z(ts: datetime) -> str:
    """`2025-01-15T10:30:00.000Z`, the form the reference devices send."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def scaled(raw: int, decimals: int) -> float:
    """The value a register integer stands for, computed exactly as the decoder does."""
    return raw / 10**decimals if decimals else float(raw)


class _Stamps:
    """Strictly increasing timestamps per key: `now`, or one step past the last one handed out."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, ...], datetime] = {}

    def next(self, key: tuple[str, ...], now: datetime, step: timedelta) -> datetime:
        last = self._last.get(key)
        ts = now if last is None or now > last else last + step
        self._last[key] = ts
        return ts


class _Kind:
    """Common state of the per-format generators: the shared random source and the message QoS."""

    kind: str

    def __init__(self, rng: random.Random, stamps: _Stamps, qos: int) -> None:
        self.rng = rng
        self.stamps = stamps
        self.qos = qos
        self._bad: dict[str, Callable[[datetime], SentMessage]] = {
            reason: getattr(self, f"bad_{reason}") for reason in REJECT_REASONS[self.kind]
        }

    def good(self, now: datetime) -> SentMessage:
        raise NotImplementedError

    def bad(self, reason: str, now: datetime) -> SentMessage:
        return self._bad[reason](now)

    def sent(
        self,
        topic: str,
        payload: bytes,
        *,
        readings: tuple[ExpectedReading, ...] = (),
        events: tuple[ExpectedEvent, ...] = (),
    ) -> SentMessage:
        return SentMessage(self.kind, topic, payload, self.qos, False, "", readings, events)

    def rejected(self, reason: str, topic: str, payload: bytes) -> SentMessage:
        return SentMessage(self.kind, topic, payload, self.qos, True, reason)


class PlainDevices(_Kind):
    """`devices/{device_id}/{metric}` with the value as text or a small JSON object."""

    kind = "plain"
    metrics: tuple[str, ...] = (*PLAIN_METRICS, STATE_METRIC, SWITCH_METRIC)

    def __init__(self, rng: random.Random, stamps: _Stamps, qos: int, devices: int) -> None:
        super().__init__(rng, stamps, qos)
        ids: dict[str, None] = {}  # ordered and unique
        while len(ids) < devices:
            ids[f"{rng.getrandbits(32):08x}"] = None
        self.device_ids: tuple[str, ...] = tuple(ids)

    def topic(self, device_id: str, metric: str) -> str:
        return f"devices/{device_id}/{metric}"

    def number(self, metric: str) -> float | int:
        _unit, low, high, decimals = PLAIN_METRICS[metric]
        value = round(self.rng.uniform(low, high), decimals)
        return int(value) if decimals == 0 else value

    def device_ts(self, device_id: str, metric: str, now: datetime) -> datetime:
        return self.stamps.next(("plain", device_id, metric), _truncate_ms(now), _MS)

    def good(self, now: datetime) -> SentMessage:
        device_id = self.rng.choice(self.device_ids)
        metric = self.rng.choice(self.metrics)
        payload, expected = self.value_payload(device_id, metric, now)
        return self.sent(self.topic(device_id, metric), payload.encode(), readings=(expected,))

    def value_payload(self, device_id: str, metric: str, now: datetime) -> tuple[str, ExpectedReading]:
        """The payload text in one of the forms devices use, and the reading it stands for."""
        ts: datetime | None = None
        sent_unit = ""
        if metric == SWITCH_METRIC:
            payload = self.rng.choice(BOOLEAN_WORDS)
            word = payload.lower()
            num, text = _BOOLEAN_NUM[word], word
        elif metric == STATE_METRIC:
            word = self.rng.choice(STATE_WORDS)
            payload = json.dumps({"value": word}) if self.rng.random() < 0.2 else word
            num, text = None, word
        else:
            unit = PLAIN_METRICS[metric][0]
            value = self.number(metric)
            num, text = float(value), None
            form = self.rng.random()
            if form < 0.3:
                payload = str(value)
            elif form < 0.6:
                payload, sent_unit = f"{value} {unit}", unit
            else:
                doc: dict[str, object] = {"value": value}
                if self.rng.random() < 0.7:
                    sent_unit = "C" if metric == "temperature" and self.rng.random() < 0.5 else unit
                    doc["unit"] = sent_unit
                if self.rng.random() < 0.6:
                    ts = self.device_ts(device_id, metric, now)
                    doc["ts"] = _iso_ms_z(ts)
                payload = json.dumps(doc, ensure_ascii=False)
        return payload, ExpectedReading(device_id, metric, sent_unit, num, text, ts)

    def any_topic(self) -> tuple[str, str]:
        return self.rng.choice(self.device_ids), self.rng.choice(tuple(PLAIN_METRICS))

    def bad_empty(self, now: datetime) -> SentMessage:
        return self.rejected("empty", self.topic(*self.any_topic()), self.rng.choice((b"", b" ")))

    def bad_not_utf8(self, now: datetime) -> SentMessage:
        # a latin-1 degree sign, UTF-16 text, a broken two-byte sequence
        payload = self.rng.choice((b"23.5 \xb0C", b"\xff\xfe2\x003\x00", b"\xc3\x28"))
        return self.rejected("not_utf8", self.topic(*self.any_topic()), payload)

    def bad_not_finite(self, now: datetime) -> SentMessage:
        payload = self.rng.choice(("nan", "NaN", "inf", "-inf", "Infinity"))
        return self.rejected("not_finite", self.topic(*self.any_topic()), payload.encode())

    def bad_missing_value(self, now: datetime) -> SentMessage:
        device_id, metric = self.any_topic()
        doc = {"val": self.number(metric), "unit": PLAIN_METRICS[metric][0], "ts": _iso_ms_z(now)}
        return self.rejected("missing_value", self.topic(device_id, metric), json.dumps(doc).encode())

    def bad_text_too_long(self, now: datetime) -> SentMessage:
        text = "error " + "".join(self.rng.choices(string.ascii_lowercase, k=self.rng.randint(260, 400)))
        return self.rejected(
            "text_too_long", self.topic(self.rng.choice(self.device_ids), STATE_METRIC), text.encode()
        )

    def bad_topic_segments(self, now: datetime) -> SentMessage:
        device_id, metric = self.any_topic()
        topic = f"{self.topic(device_id, metric)}/{self.rng.choice(('raw', 'value', 'x'))}"
        return self.rejected("topic_segments", topic, str(self.number(metric)).encode())


class EventDevices(_Kind):
    """`qs/v1/{device_id}/events` with reference-004 JSON events (sometimes an array of them)."""

    kind = "event"

    def __init__(
        self, rng: random.Random, stamps: _Stamps, qos: int, devices: int, naive_tz: tzinfo = UTC
    ) -> None:
        super().__init__(rng, stamps, qos)
        self.device_ids: tuple[str, ...] = tuple(f"esp32-{n:02d}" for n in range(1, devices + 1))
        self.naive_tz = naive_tz

    def topic(self, device_id: str) -> str:
        return f"qs/v1/{device_id}/events"

    def event_id(self, device_id: str, now: datetime) -> str:
        """`<device>-<epoch ms>` as devices name their events; bumped per device so that it stays unique."""
        ms = self.stamps.next(("event", device_id), _truncate_ms(now), _MS)
        return f"{device_id}-{(ms - _EPOCH) // _MS}"

    def ts_device(self, now: datetime) -> tuple[str | None, datetime | None]:
        """What is sent and the instant it means: ISO with Z, with an offset, naive (device zone) or none."""
        ts = _truncate_ms(now - timedelta(seconds=self.rng.uniform(0, EVENT_MAX_AGE_S)))
        form = self.rng.random()
        if form < 0.45:
            return _iso_ms_z(ts), ts
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


class F2Fleet(_Kind):
    """F2 Smart Controllers: Modbus replies in hex, door and strike status booleans."""

    kind = "f2"

    def __init__(self, rng: random.Random, stamps: _Stamps, qos: int, naive_tz: tzinfo = UTC) -> None:
        super().__init__(rng, stamps, qos)
        self.naive_tz = naive_tz

    @staticmethod
    def sensor_topic(
        prefix: str, controller: F2Controller, sensor: F2Sensor, port: str = "", component: str = ""
    ) -> str:
        return (
            f"{prefix}/{controller.device_key}/{sensor.mode}/{port or sensor.port}/"
            f"{component or sensor.component}"
        )

    def values(self, specs: tuple[DatapointSpec, ...]) -> dict[str, float]:
        values = {}
        for spec in specs:
            low, high = F2_VALUE_RANGES[spec.name]
            scale = 10**spec.decimals
            raw = self.rng.randint(round(low * scale), round(high * scale))
            values[spec.name] = scaled(raw, spec.decimals)
        return values

    def frame(self, sensor: F2Sensor) -> tuple[bytes, dict[str, float]]:
        specs = SENSOR_MODELS[sensor.model]
        values = self.values(specs)
        return encode_reply(sensor.modbus_address, encode_datapoints(values, list(specs))), values

    def timestamp(self, controller: F2Controller, sensor: F2Sensor, now: datetime) -> tuple[str, datetime]:
        """`2026-11-23 15:13:10.543400`: naive, in the device zone (UTC unless configured otherwise)."""
        ts = self.stamps.next(("f2", controller.mac, sensor.port, sensor.component), now, _US)
        return ts.astimezone(self.naive_tz).strftime("%Y-%m-%d %H:%M:%S.%f"), ts

    def prefix(self) -> str:
        return "tele" if self.rng.random() < 0.85 else "stat"

    def good(self, now: datetime) -> SentMessage:
        controller = self.rng.choice(F2_CONTROLLERS)
        slot = self.rng.randrange(len(F2_SENSORS) + 1)
        if slot == len(F2_SENSORS):
            return self.doors(controller)
        sensor = F2_SENSORS[slot]
        if sensor.model not in SENSOR_MODELS:
            return self.strike(controller, sensor)
        frame, values = self.frame(sensor)
        ts_text, ts = self.timestamp(controller, sensor, now)
        payload = json.dumps({"timestamp": ts_text, "data": to_hex(frame)})
        readings = tuple(
            ExpectedReading(
                controller.device_key,
                f"{sensor.port}.{sensor.component}.{spec.name}",
                spec.unit,
                values[spec.name],
                None,
                ts,
            )
            for spec in SENSOR_MODELS[sensor.model]
        )
        topic = self.sensor_topic(self.prefix(), controller, sensor)
        return self.sent(topic, payload.encode(), readings=readings)

    def doors(self, controller: F2Controller) -> SentMessage:
        states = {door: self.rng.random() < 0.3 for door in DOORS}
        readings = tuple(
            ExpectedReading(
                controller.device_key,
                f"door-sensors.{door}",
                "",
                1.0 if state else 0.0,
                "true" if state else "false",
                None,
            )
            for door, state in states.items()
        )
        return self.sent(
            f"stat/{controller.device_key}/door-sensors", json.dumps(states).encode(), readings=readings
        )

    def strike(self, controller: F2Controller, sensor: F2Sensor) -> SentMessage:
        state = self.rng.random() < 0.5
        reading = ExpectedReading(
            controller.device_key,
            f"{sensor.port}.{sensor.component}",
            "",
            1.0 if state else 0.0,
            "true" if state else "false",
            None,
        )
        return self.sent(
            self.sensor_topic("stat", controller, sensor), json.dumps(state).encode(), readings=(reading,)
        )

    def broken(
        self,
        reason: str,
        now: datetime,
        data: Callable[[bytes], str | None],
        *,
        controller: F2Controller | None = None,
        port: str = "",
        component: str = "",
    ) -> SentMessage:
        """A Modbus sensor message whose frame `data` turns into the defective hex (None: no data field)."""
        controller = controller or self.rng.choice(F2_CONTROLLERS)
        sensor = self.rng.choice(MODBUS_SENSORS)
        frame, _ = self.frame(sensor)
        ts_text, _ = self.timestamp(controller, sensor, now)
        doc: dict[str, str] = {"timestamp": ts_text}
        hex_data = data(frame)
        if hex_data is not None:
            doc["data"] = hex_data
        topic = self.sensor_topic(self.prefix(), controller, sensor, port, component)
        return self.rejected(reason, topic, json.dumps(doc).encode())

    def bad_crc(self, now: datetime) -> SentMessage:
        flip = self.rng.randint(1, 255)
        return self.broken("crc", now, lambda frame: to_hex(frame[:-1] + bytes([frame[-1] ^ flip])))

    def bad_non_hex(self, now: datetime) -> SentMessage:
        def garble(frame: bytes) -> str:
            tokens = to_hex(frame).split()
            tokens[self.rng.randrange(len(tokens))] = self.rng.choice(("ZZ", "G7", "?1", "x0"))
            return " ".join(tokens)

        return self.broken("non_hex", now, garble)

    def bad_byte_count(self, now: datetime) -> SentMessage:
        def truncate(frame: bytes) -> str:
            # one register byte lost before the CRC was computed: only the byte count can tell
            body = frame[:-2]
            cut = self.rng.randrange(3, len(body))
            short = body[:cut] + body[cut + 1 :]
            crc = crc16_modbus(short)
            return to_hex(short + bytes([crc & 0xFF, crc >> 8]))

        return self.broken("byte_count", now, truncate)

    def bad_unknown_component(self, now: datetime) -> SentMessage:
        known = {(s.port, s.component) for s in F2_SENSORS}
        slots = [slot for slot in UNKNOWN_F2_SLOTS if slot not in known]
        port, component = self.rng.choice(slots)
        return self.broken("unknown_component", now, to_hex, port=port, component=component)

    def bad_unknown_controller(self, now: datetime) -> SentMessage:
        known = {c.mac for c in F2_CONTROLLERS}
        mac = ""
        while not mac or mac in known:
            mac = f"ffee{self.rng.getrandbits(32):08x}"
        return self.broken("unknown_controller", now, to_hex, controller=F2Controller(mac))

    def bad_missing_data(self, now: datetime) -> SentMessage:
        return self.broken("missing_data", now, lambda frame: None)


class MessageFactory:
    """A seeded fleet: each `next(now)` is one message of a random kind, bad with probability `bad_share`."""

    def __init__(
        self,
        seed: int,
        *,
        devices: int = 8,
        kinds: tuple[str, ...] = KINDS,
        bad_share: float = 0.05,
        qos: int = 1,
        naive_tz: tzinfo = UTC,
    ) -> None:
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown or not kinds:
            raise ValueError(
                f"kinds must be a non-empty selection of {','.join(KINDS)}, got {','.join(kinds)!r}"
            )
        if not 0.0 <= bad_share <= 1.0:
            raise ValueError(f"bad_share must be between 0 and 1, got {bad_share}")
        if devices < 1:
            raise ValueError(f"devices must be at least 1, got {devices}")
        self.rng = random.Random(seed)
        self.kinds = tuple(kinds)
        self.bad_share = bad_share
        stamps = _Stamps()
        self.plain = PlainDevices(self.rng, stamps, qos, devices)
        self.event = EventDevices(self.rng, stamps, qos, devices, naive_tz)
        self.f2 = F2Fleet(self.rng, stamps, qos, naive_tz)
        self._generators: dict[str, _Kind] = {"plain": self.plain, "event": self.event, "f2": self.f2}

    @property
    def device_ids(self) -> tuple[str, ...]:
        """Every device of the fleet that sends the chosen kinds (F2: the controllers). Deliberately bad
        messages may name devices outside it (an unknown F2 controller)."""
        ids = {
            "plain": self.plain.device_ids,
            "event": self.event.device_ids,
            "f2": tuple(c.device_key for c in F2_CONTROLLERS),
        }
        return tuple(device for kind in self.kinds for device in ids[kind])

    def next(self, now: datetime) -> SentMessage:
        """The next message; `now` (UTC-aware) is the devices' clock."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        now = now.astimezone(UTC)
        generator = self._generators[self.rng.choice(self.kinds)]
        if self.rng.random() < self.bad_share:
            return generator.bad(self.rng.choice(tuple(REJECT_REASONS[generator.kind])), now)
        return generator.good(now)
