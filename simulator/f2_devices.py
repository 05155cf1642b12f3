"""Simulated F2 Smart Controllers: Modbus replies in hex, door and strike status booleans, and the
deliberately bad frames and topics the decoder rejects. Values are drawn as register integers, so the
expected reading is exactly what the decoder computes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo

from iot_core.formats.f2 import DatapointSpec, crc16_modbus, encode_datapoints, encode_reply, to_hex
from simulator.device_clock import US, Stamps
from simulator.expected import ExpectedReading, SentMessage
from simulator.fleet import DOORS, F2_CONTROLLERS, F2_SENSORS, SENSOR_MODELS, F2Controller, F2Sensor
from simulator.message_kind import MessageKind

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


def scaled(raw: int, decimals: int) -> float:
    """The value a register integer stands for, computed exactly as the decoder does."""
    return raw / 10**decimals if decimals else float(raw)


class F2Fleet(MessageKind):
    """F2 Smart Controllers: Modbus replies in hex, door and strike status booleans."""

    kind = "f2"

    def __init__(self, rng: random.Random, stamps: Stamps, qos: int, naive_tz: tzinfo = UTC) -> None:
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
        ts = self.stamps.next(("f2", controller.mac, sensor.port, sensor.component), now, US)
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
