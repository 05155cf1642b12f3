"""The F2 catalog the pipeline loads from the seeded metadata tables (test_migrations keeps them equal)."""

from __future__ import annotations

from iot_core.formats.f2_messages import F2Catalog, SensorEntry
from simulator.fleet import F2_CONTROLLERS, F2_SENSORS, SENSOR_MODELS


def fleet_catalog() -> F2Catalog:
    catalog = F2Catalog()
    for controller in F2_CONTROLLERS:
        for sensor in F2_SENSORS:
            catalog.add(
                controller.mac,
                sensor.port,
                sensor.component,
                SensorEntry(sensor.mode, sensor.model, SENSOR_MODELS.get(sensor.model, ())),
            )
    return catalog
