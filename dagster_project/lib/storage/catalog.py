"""What the database knows of devices and metrics: their ids, when each was last seen, the F2 catalog."""

from __future__ import annotations

import polars as pl
import psycopg

from iot_core.formats.f2 import DatapointSpec
from iot_core.formats.f2_messages import F2Catalog, SensorEntry


def load_f2_catalog(conn: psycopg.Connection) -> F2Catalog:
    catalog = F2Catalog()
    rows = conn.execute(
        """SELECT ct.mac, cn.port, cn.mode, se.component, se.model,
                  coalesce(array_agg(ARRAY[dp.name, dp.byte_offset::text, dp.byte_length::text,
                                           dp.is_signed::text, dp.decimals::text, dp.unit]
                                     ORDER BY dp.byte_offset) FILTER (WHERE dp.datapoint_id IS NOT NULL),
                           '{}')
           FROM controllers ct
           JOIN connectors cn USING (controller_id)
           JOIN sensors se USING (connector_id)
           LEFT JOIN datapoints dp USING (sensor_id)
           GROUP BY ct.mac, cn.port, cn.mode, se.component, se.model"""
    ).fetchall()
    for mac, port, mode, component, model, points in rows:
        specs = tuple(
            DatapointSpec(name, int(offset), int(length), signed == "true", int(decimals), unit)
            for name, offset, length, signed, decimals, unit in points
        )
        catalog.add(mac, port, component, SensorEntry(mode, model, specs))
    return catalog


def _ids(
    conn: psycopg.Connection, insert: str, rows: list[tuple], select: str, select_columns: int, schema: dict
) -> pl.DataFrame:
    """Insert the dimension rows that are new, then read the ids of all of them (key columns first)."""
    if not rows:
        return pl.DataFrame(schema=schema)
    columns = [list(col) for col in zip(*rows, strict=True)]
    with conn.cursor() as cur:
        cur.executemany(insert, rows)
        cur.execute(select, columns[:select_columns])
        return pl.DataFrame(cur.fetchall(), orient="row", schema=schema)


def device_ids(conn: psycopg.Connection, devices: pl.DataFrame) -> pl.DataFrame:
    """device_key, device_kind -> device_id, registering devices seen for the first time."""
    rows = devices.unique(subset="device_key", keep="first", maintain_order=True).rows()
    return _ids(
        conn,
        "INSERT INTO devices (device_key, kind) VALUES (%s, %s) ON CONFLICT (device_key) DO NOTHING",
        rows,
        "SELECT device_key, device_id FROM devices WHERE device_key = ANY(%s)",
        1,
        {"device_key": pl.String, "device_id": pl.Int32},
    )


def metric_ids(conn: psycopg.Connection, metrics: pl.DataFrame) -> pl.DataFrame:
    """metric, unit -> metric_id, registering metrics seen for the first time. Units are looked up as
    given: the caller spells them canonically first (`with_canonical_units`)."""
    rows = metrics.unique(maintain_order=True).rows()
    return _ids(
        conn,
        "INSERT INTO metrics (name, unit) VALUES (%s, %s) ON CONFLICT (name, unit) DO NOTHING",
        rows,
        "SELECT name, unit, metric_id FROM metrics WHERE (name, unit) IN "
        "(SELECT * FROM unnest(%s::text[], %s::text[]))",
        2,
        {"metric": pl.String, "unit": pl.String, "metric_id": pl.Int32},
    )


def respelled_metric_ids(conn: psycopg.Connection, names: list[str]) -> list[int]:
    """The ids of the metrics of these names whose unit is not in its canonical spelling: a database that
    stored two spellings of one unit before sql/020 keeps both metrics (that migration renamed the rest)."""
    if not names:
        return []
    rows = conn.execute(
        "SELECT metric_id FROM metrics WHERE name = ANY(%s) AND unit <> canonical_unit(unit)", (names,)
    ).fetchall()
    return [int(metric_id) for (metric_id,) in rows]


def touch_devices(conn: psycopg.Connection, seen: pl.DataFrame) -> None:
    """Move `devices.last_seen` forward to the newest arrival of each device in `seen`
    (`device_id`, `arrived_at`); never backwards, so re-processing old hours leaves it alone."""
    if seen.is_empty():
        return
    newest = seen.group_by("device_id").agg(pl.col("arrived_at").max())
    conn.execute(
        """UPDATE devices d SET last_seen = s.arrived_at
           FROM unnest(%s::integer[], %s::timestamptz[]) AS s (device_id, arrived_at)
           WHERE d.device_id = s.device_id AND (d.last_seen IS NULL OR d.last_seen < s.arrived_at)""",
        (newest["device_id"].to_list(), newest["arrived_at"].to_list()),
    )
