"""The simulated F2 fleet: controllers, connectors, sensors and their datapoints.

`sql/003_seed_f2_fleet.sql` seeds the same metadata into the database; a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from iot_core.formats.f2 import DatapointSpec

SENSOR_MODELS: dict[str, tuple[DatapointSpec, ...]] = {
    "th-sensor": (
        DatapointSpec("temperature", 0, 2, True, 2, "°C"),
        DatapointSpec("humidity", 2, 2, False, 1, "%RH"),
    ),
    "power-meter": (
        DatapointSpec("voltage", 0, 2, False, 1, "V"),
        DatapointSpec("current", 2, 2, False, 3, "A"),
        DatapointSpec("active_power", 4, 4, True, 0, "W"),
    ),
    "co2-sensor": (
        DatapointSpec("co2", 0, 2, False, 0, "ppm"),
        DatapointSpec("temperature", 2, 2, True, 1, "°C"),
    ),
}


@dataclass(frozen=True, slots=True)
class F2Sensor:
    port: str  # connector J1..J4
    mode: str  # connector mode, the topic's third segment
    component: str  # sensor-1, strike-1, ...
    model: str  # key of SENSOR_MODELS, or "strike" for access-control outputs
    modbus_address: int


@dataclass(frozen=True, slots=True)
class F2Controller:
    mac: str  # 12 lowercase hex digits

    @property
    def device_key(self) -> str:
        return f"f2-{self.mac}"


F2_SENSORS: tuple[F2Sensor, ...] = (
    F2Sensor("J1", "sensor-mode", "sensor-1", "th-sensor", 1),
    F2Sensor("J2", "access-control-mode", "strike-1", "strike", 0),
    F2Sensor("J3", "sensor-mode", "sensor-1", "power-meter", 3),
    F2Sensor("J4", "sensor-mode", "sensor-2", "co2-sensor", 4),
)

F2_CONTROLLERS: tuple[F2Controller, ...] = tuple(F2Controller(f"aabbccddee{n:02x}") for n in range(1, 5))

DOORS: tuple[str, ...] = ("door-1", "door-2")
