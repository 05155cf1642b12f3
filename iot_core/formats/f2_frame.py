"""F2 controller messages decoded column-wise, exactly as `f2_messages.decode_f2_sensor` and
`decode_f2_doors` decode them.

What is decided here (any other message goes to the per-message path):

- topic `<stat|tele>/f2-<12 hex>/<mode>/<port>/<component>` naming a sensor of the catalog in that
  mode, or `<stat|tele>/f2-<12 hex>/door-sensors` of a controller in the catalog;
- payload valid UTF-8 of at most `_MAX_FAST_BYTES`;
- a status output: the payload is `true` or `false`;
- a Modbus sensor: `{"data": "<hex pairs, single spaces between pairs allowed>"}` with an optional
  `"timestamp"` (null or a form `ts_columns` reads), each once, whose frame `modbus_columns` reads with
  every datapoint of the sensor's model;
- door sensors: a non-empty object of distinct door names (strings without escapes) to `true`/`false`,
  each metric within the field limit.
"""

from __future__ import annotations

from datetime import tzinfo

import polars as pl

from iot_core.formats.columns import (
    COUNTS_SCHEMA,
    JSON_STRING,
    JSON_WS,
    POSITION,
    arrival,
    candidates,
    empty_rows,
    inner,
    member,
)
from iot_core.formats.f2 import DatapointSpec
from iot_core.formats.f2_messages import F2Catalog
from iot_core.formats.guards import Limits
from iot_core.formats.modbus_columns import read_datapoints
from iot_core.formats.ts_columns import device_ts
from iot_core.rows import DECODED_MEASUREMENT, UTC_US

# Larger payloads always take the per-message path (an F2 message is about a hundred bytes).
_MAX_FAST_BYTES = 4096
_SEGMENT = r"[^/\x00]+"
_TOPIC = rf"^(?:stat|tele)/f2-[0-9a-fA-F]{{12}}/(?:door-sensors|{_SEGMENT}/{_SEGMENT}/{_SEGMENT})$"
_WS = JSON_WS
_BOOLEAN = rf"^{_WS}(true|false){_WS}$"
_HEX = r"[0-9A-Fa-f]{2}(?: ?[0-9A-Fa-f]{2})*"
_SENSOR_MEMBER = rf'"(?:data|timestamp)"{_WS}:{_WS}(?:{JSON_STRING}|null)'
_SENSOR = rf"^{_WS}\{{{_WS}{_SENSOR_MEMBER}(?:{_WS},{_WS}{_SENSOR_MEMBER})*{_WS}\}}{_WS}$"
_DOOR = rf"{JSON_STRING}{_WS}:{_WS}(?:true|false)"
_DOORS = rf"^{_WS}\{{{_WS}{_DOOR}(?:{_WS},{_WS}{_DOOR})*{_WS}\}}{_WS}$"
_READING = {
    POSITION: pl.UInt32,
    "item": pl.Int32,
    "metric": pl.String,
    "unit": pl.String,
    "ts": UTC_US,
    "value_num": pl.Float64,
    "value_text": pl.String,
}


def _catalog_frame(catalog: F2Catalog) -> tuple[pl.DataFrame, list[tuple[DatapointSpec, ...]]]:
    """The catalog's sensors as rows (mac, port, component, sensor_mode, model) and each model's
    datapoints, indexed by `model`."""
    models: list[tuple[DatapointSpec, ...]] = []
    rows: list[tuple[str, str, str, str, int]] = []
    for mac, sensors in catalog.sensors.items():
        for (port, component), entry in sensors.items():
            if entry.datapoints not in models:
                models.append(entry.datapoints)
            rows.append((mac, port, component, entry.mode, models.index(entry.datapoints)))
    schema = {"mac": pl.String, "port": pl.String, "component": pl.String, "sensor_mode": pl.String}
    return pl.DataFrame(rows, schema={**schema, "model": pl.Int64}, orient="row"), models


def _status(sensors: pl.DataFrame, models: list[tuple[DatapointSpec, ...]]) -> pl.DataFrame:
    """Status outputs (a model without datapoints): the payload is a JSON boolean."""
    status = sensors.filter(pl.col("model").is_in([i for i, specs in enumerate(models) if not specs]))
    status = status.with_columns(word=pl.col("text").str.extract(_BOOLEAN, 1)).filter(
        pl.col("word").is_not_null()
    )
    return status.select(
        POSITION,
        item=pl.lit(0, pl.Int32),
        metric=pl.col("port") + "." + pl.col("component"),
        unit=pl.lit(""),
        ts=pl.lit(None, UTC_US),
        value_num=pl.when(pl.col("word") == "true").then(1.0).otherwise(0.0),
        value_text="word",
    )


def _modbus(
    sensors: pl.DataFrame,
    models: list[tuple[DatapointSpec, ...]],
    default_tz: tzinfo,
    *,
    min_year: int,
    max_future_s: int,
) -> pl.DataFrame:
    """Modbus sensors: a frame in `data`, its datapoints read by `modbus_columns`."""
    modbus = sensors.filter(
        pl.col("model").is_in([i for i, specs in enumerate(models) if specs])
        & pl.col("text").str.contains(_SENSOR)
    )
    data, timestamp = pl.col("data"), pl.col("timestamp")
    modbus = modbus.with_columns(
        data=pl.col("text").str.extract(rf"{member('data')}({JSON_STRING})", 1),
        timestamp=pl.col("text").str.extract(rf"{member('timestamp')}({JSON_STRING}|null)", 1),
        members=pl.col("text").str.count_matches(rf'"(?:data|timestamp)"{_WS}:'),
    ).with_columns(
        hex=pl.when(inner(data).str.contains(rf"^{_HEX}$")).then(
            inner(data).str.replace_all(" ", "", literal=True)
        ),
        ts_text=pl.when(timestamp.str.starts_with('"')).then(inner(timestamp)),
    )
    ts = device_ts(
        modbus["ts_text"], modbus["arrived_at"], default_tz, min_year=min_year, max_future_s=max_future_s
    )
    modbus = modbus.with_columns(ts=ts).filter(
        pl.col("hex").is_not_null()
        & (pl.col("members") == 1 + timestamp.is_not_null().cast(pl.UInt32))
        & (pl.col("ts_text").is_null() | pl.col("ts").is_not_null())
    )
    values = read_datapoints(modbus.select(POSITION, "model", "hex"), models)
    names = pl.DataFrame(
        [
            (m, item, spec.name, spec.unit)
            for m, specs in enumerate(models)
            for item, spec in enumerate(specs)
        ],
        schema={"model": pl.Int64, "item": pl.Int32, "name": pl.String, "unit": pl.String},
        orient="row",
    )
    readings = values.join(modbus.select(POSITION, "model", "port", "component", "ts"), on=POSITION).join(
        names, on=["model", "item"]
    )
    return readings.select(
        POSITION,
        "item",
        metric=pl.col("port") + "." + pl.col("component") + "." + pl.col("name"),
        unit="unit",
        ts="ts",
        value_num="value_num",
        value_text=pl.lit(None, pl.String),
    )


def _doors(doors: pl.DataFrame, field: int) -> pl.DataFrame:
    """Door sensors: one reading per door, sorted by door name."""
    pairs = (
        doors.filter(pl.col("text").str.contains(_DOORS))
        .select(POSITION, pair=pl.col("text").str.extract_all(_DOOR))
        .explode("pair")
        .with_columns(
            door=pl.col("pair").str.extract(r'^"([^"]*)"', 1),
            word=pl.when(pl.col("pair").str.ends_with("true"))
            .then(pl.lit("true"))
            .otherwise(pl.lit("false")),
        )
        .with_columns(metric=pl.lit("door-sensors.") + pl.col("door"))
    )
    good = (pl.col("door").n_unique() == pl.len()) & (pl.col("metric").str.len_chars() <= field).all()
    pairs = pairs.filter(good.over(POSITION)).sort(POSITION, "door")
    return pairs.select(
        POSITION,
        item=pl.int_range(pl.len(), dtype=pl.Int32).over(POSITION),
        metric="metric",
        unit=pl.lit(""),
        ts=pl.lit(None, UTC_US),
        value_num=pl.when(pl.col("word") == "true").then(1.0).otherwise(0.0),
        value_text="word",
    )


def decode_f2_frame(
    raw: pl.DataFrame,
    catalog: F2Catalog,
    limits: Limits,
    default_tz: tzinfo,
    *,
    min_year: int,
    max_future_s: int,
    min_rows: int = 1,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(`DECODED_MEASUREMENT` rows plus `POSITION`; POSITION, raw_id and `elements` of each decided
    message) for the F2 messages of `raw` (raw_id, topic, payload, rx_us) this path decides (none when
    it has fewer than `min_rows` candidates)."""
    max_bytes = min(limits.max_payload_bytes, _MAX_FAST_BYTES)
    selected = candidates(raw, ("stat/", "tele/"), _TOPIC, max_bytes)
    if selected.height < max(min_rows, 1):
        return empty_rows(DECODED_MEASUREMENT), pl.DataFrame(schema=COUNTS_SCHEMA)
    segments = pl.col("topic").str.split_exact("/", 4)
    messages = selected.with_columns(
        mac=segments.struct.field("field_1").str.slice(3).str.to_lowercase(),
        doors=segments.struct.field("field_3").is_null(),
        mode=segments.struct.field("field_2"),
        port=segments.struct.field("field_3"),
        component=segments.struct.field("field_4"),
        arrived_at=arrival(),
    )
    sensors, models = _catalog_frame(catalog)
    sensors = (
        messages.filter(~pl.col("doors"))
        .join(sensors, on=["mac", "port", "component"])
        .filter(pl.col("mode") == pl.col("sensor_mode"))
    )
    doors = messages.filter(pl.col("doors") & pl.col("mac").is_in(list(catalog.sensors)))
    ts_options = {"min_year": min_year, "max_future_s": max_future_s}
    readings = pl.concat(
        [
            part.cast(_READING)  # type: ignore[arg-type]
            for part in (
                _status(sensors, models),
                _modbus(sensors, models, default_tz, **ts_options),
                _doors(doors, limits.max_field_chars),
            )
        ]
    )
    rows = readings.join(messages.select(POSITION, "raw_id", "mac", "arrived_at"), on=POSITION)
    measurements = (
        rows.select(
            POSITION,
            "raw_id",
            "item",
            device_key=pl.lit("f2-") + pl.col("mac"),
            device_kind=pl.lit("f2"),
            metric="metric",
            unit="unit",
            ts=pl.coalesce("ts", "arrived_at"),
            value_num="value_num",
            value_text="value_text",
            arrived_at="arrived_at",
        )
        .cast({POSITION: pl.UInt32, **DECODED_MEASUREMENT.schema})  # type: ignore[arg-type]
        .sort(POSITION, "item")
    )
    counts = measurements.group_by(POSITION).agg(pl.col("raw_id").first(), elements=pl.len().cast(pl.Int32))
    return measurements, counts
