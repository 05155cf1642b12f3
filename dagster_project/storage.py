"""Everything the assets write to and read from the database, as plain functions over a connection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl
import psycopg

from iot_core.formats.batch import REJECT_SCHEMA, UTC_US
from iot_core.formats.f2 import DatapointSpec
from iot_core.formats.f2_messages import F2Catalog, SensorEntry

RAW_STAGE_COLUMNS = (
    "arrived_at timestamptz, stream text, entry_ms bigint, entry_seq bigint, topic text, payload bytea, "
    "qos smallint, retain boolean, rx_us bigint, batch_id bigint"
)
RAW_COLUMNS = ("arrived_at", "stream", "entry_ms", "entry_seq", "topic", "payload", "qos", "retain", "rx_us")


@dataclass(frozen=True, slots=True)
class BatchInfo:
    run_id: str
    partition_key: str
    range_start: datetime
    range_end: datetime
    start_id: str
    end_id: str
    streams: Sequence[str]
    decoder_version: str


def open_batch(conn: psycopg.Connection, info: BatchInfo) -> int:
    """The batch row of this run (one per run, created by whichever asset runs first)."""
    row = conn.execute(
        """INSERT INTO batches (run_id, partition_key, range_start, range_end, start_id, end_id, streams,
                                decoder_version)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (run_id) DO UPDATE SET decoder_version = excluded.decoder_version
           RETURNING batch_id""",
        (
            info.run_id,
            info.partition_key,
            info.range_start,
            info.range_end,
            info.start_id,
            info.end_id,
            list(info.streams),
            info.decoder_version,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def finish_batch(conn: psycopg.Connection, batch_id: int, **counts: int) -> None:
    allowed = {"raw_count", "measurement_count", "event_count", "rejected_count", "duplicate_count"}
    if not counts.keys() <= allowed:
        raise ValueError(f"unknown batch counters {sorted(counts.keys() - allowed)}")
    sets = ", ".join(f"{name} = %({name})s" for name in counts)
    conn.execute(
        f"UPDATE batches SET {sets}, finished_at = now() WHERE batch_id = %(b)s", {**counts, "b": batch_id}
    )


def land_raw(conn: psycopg.Connection, rows: Iterable[tuple], batch_id: int) -> int:
    """Insert stream entries (tuples in RAW_COLUMNS order) once; returns how many were new."""
    with conn.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS stage_raw ({RAW_STAGE_COLUMNS}) ON COMMIT DELETE ROWS")
        with cur.copy(f"COPY stage_raw ({', '.join(RAW_COLUMNS)}, batch_id) FROM STDIN") as copy:
            for row in rows:
                copy.write_row((*row, batch_id))
        cur.execute(
            f"""INSERT INTO raw_messages ({", ".join(RAW_COLUMNS)}, batch_id)
                SELECT {", ".join(RAW_COLUMNS)}, batch_id FROM stage_raw
                ON CONFLICT (arrived_at, stream, entry_ms, entry_seq) DO NOTHING"""
        )
        return cur.rowcount


def count_raw(conn: psycopg.Connection, start: datetime, end: datetime) -> int:
    row = conn.execute(
        "SELECT count(*) FROM raw_messages WHERE arrived_at >= %s AND arrived_at < %s", (start, end)
    ).fetchone()
    return int(row[0]) if row else 0


def load_raw(conn: psycopg.Connection, start: datetime, end: datetime) -> pl.DataFrame:
    """The archived messages that arrived in [start, end), in arrival order."""
    with conn.cursor(binary=True) as cur:
        cur.execute(
            """SELECT raw_id, topic, payload, rx_us, arrived_at FROM raw_messages
               WHERE arrived_at >= %s AND arrived_at < %s ORDER BY arrived_at, stream, entry_ms, entry_seq""",
            (start, end),
        )
        rows = cur.fetchall()
    return pl.DataFrame(
        rows,
        orient="row",
        schema={
            "raw_id": pl.Int64,
            "topic": pl.String,
            "payload": pl.Binary,
            "rx_us": pl.Int64,
            "arrived_at": UTC_US,
        },
    )


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


def _copy(cur: psycopg.Cursor, table: str, frame: pl.DataFrame) -> None:
    with cur.copy(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN") as copy:
        for row in frame.iter_rows():
            copy.write_row(row)


def _duplicates(frame: pl.DataFrame, key: list[str], what: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(first row per key by raw_id/item, rejections of the later rows): at-least-once repeats."""
    ordered = frame.sort("raw_id", "item")
    first = ordered.unique(subset=key, keep="first", maintain_order=True)
    later = ordered.join(first.select("raw_id", "item"), on=["raw_id", "item"], how="anti")
    firsts = first.select([*key, pl.col("raw_id").alias("first_raw_id")])
    pairs = later.join(firsts, on=key, how="left").select("raw_id", "item", "first_raw_id").rows()
    return first, _duplicate_rejections(pairs, what)


def _duplicate_rejections(pairs: list[tuple], what: str) -> pl.DataFrame:
    """Rejections of (raw_id, item) whose identity was already stored from raw message `first_raw_id`."""
    return pl.DataFrame(
        [
            (raw_id, item, "duplicate", f"duplicate_{what}", f"same {what} as raw message {first}", "")
            for raw_id, item, first in pairs
        ],
        orient="row",
        schema=REJECT_SCHEMA,
    )


def _upsert_staged(
    conn: psycopg.Connection,
    stage: str,
    stage_columns: str,
    staged: pl.DataFrame,
    upsert: str,
    stored_duplicates: str,
    batch_id: int,
) -> tuple[int, list[tuple]]:
    """COPY `staged` into a temp table, upsert from it, and find the staged rows whose identity is held
    by another raw message; returns (rows written or confirmed, (raw_id, item, first_raw_id) pairs)."""
    with conn.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({stage_columns}) ON COMMIT DELETE ROWS")
        _copy(cur, stage, staged)
        cur.execute(upsert, {"b": batch_id})
        cur.execute(stored_duplicates)
        pairs = cur.fetchall()
    return staged.height - len(pairs), pairs


def store_measurements(
    conn: psycopg.Connection, frame: pl.DataFrame, batch_id: int
) -> tuple[int, pl.DataFrame]:
    """Upsert measurements; returns (rows written or confirmed, duplicate rejections)."""
    if frame.is_empty():
        return 0, pl.DataFrame(schema=REJECT_SCHEMA)
    devices = device_ids(conn, frame.select("device_key", "device_kind"))
    metrics = metric_ids(conn, frame.select("metric", "unit"))
    keyed = frame.join(devices, on="device_key").join(metrics, on=["metric", "unit"])
    first, dup_in_batch = _duplicates(keyed, ["device_id", "metric_id", "ts"], "device, metric and timestamp")
    staged = first.select(
        "ts", "device_id", "metric_id", "value_num", "value_text", "arrived_at", "raw_id", "item"
    )
    stored, pairs = _upsert_staged(
        conn,
        "stage_measurements",
        "ts timestamptz, device_id int, metric_id int, value_num float8, value_text text, "
        "arrived_at timestamptz, raw_id bigint, item int",
        staged,
        """INSERT INTO measurements AS m (ts, device_id, metric_id, value_num, value_text, arrived_at,
                                          raw_id, batch_id)
           SELECT ts, device_id, metric_id, value_num, value_text, arrived_at, raw_id, %(b)s
           FROM stage_measurements
           ON CONFLICT (device_id, metric_id, ts) DO UPDATE
           SET value_num = excluded.value_num, value_text = excluded.value_text,
               batch_id = excluded.batch_id
           WHERE m.raw_id = excluded.raw_id
             AND (m.value_num, m.value_text)
                 IS DISTINCT FROM (excluded.value_num, excluded.value_text)""",
        """SELECT s.raw_id, s.item, m.raw_id FROM stage_measurements s
           JOIN measurements m USING (device_id, metric_id, ts) WHERE m.raw_id <> s.raw_id""",
        batch_id,
    )
    return stored, pl.concat([dup_in_batch, _duplicate_rejections(pairs, "device, metric and timestamp")])


def store_events(conn: psycopg.Connection, frame: pl.DataFrame, batch_id: int) -> tuple[int, pl.DataFrame]:
    if frame.is_empty():
        return 0, pl.DataFrame(schema=REJECT_SCHEMA)
    devices = device_ids(conn, frame.select("device_key", pl.lit("event").alias("device_kind")))
    keyed = frame.join(devices, on="device_key")
    first, dup_in_batch = _duplicates(keyed, ["device_id", "event_id"], "device and event_id")
    staged = first.select(
        "device_id",
        "event_id",
        "schema",
        "event_type",
        "value_num",
        "value_text",
        "unit",
        "ts_device",
        "ts_server",
        "meta",
        "raw_id",
        "item",
    )
    stored, pairs = _upsert_staged(
        conn,
        "stage_events",
        "device_id int, event_id text, schema int, event_type text, value_num float8, value_text text, "
        "unit text, ts_device timestamptz, ts_server timestamptz, meta jsonb, raw_id bigint, item int",
        staged,
        """INSERT INTO events AS e (device_id, event_id, schema, event_type, value_num, value_text, unit,
                                    ts_device, ts_server, meta, raw_id, batch_id)
           SELECT device_id, event_id, schema, event_type, value_num, value_text, unit, ts_device,
                  ts_server, meta, raw_id, %(b)s FROM stage_events
           ON CONFLICT (device_id, event_id) DO UPDATE
           SET event_type = excluded.event_type, value_num = excluded.value_num,
               value_text = excluded.value_text, unit = excluded.unit, ts_device = excluded.ts_device,
               meta = excluded.meta, batch_id = excluded.batch_id
           WHERE e.raw_id = excluded.raw_id
             AND (e.event_type, e.value_num, e.value_text, e.unit, e.ts_device, e.meta)
                 IS DISTINCT FROM (excluded.event_type, excluded.value_num, excluded.value_text,
                                   excluded.unit, excluded.ts_device, excluded.meta)""",
        """SELECT s.raw_id, s.item, e.raw_id FROM stage_events s
           JOIN events e USING (device_id, event_id) WHERE e.raw_id <> s.raw_id""",
        batch_id,
    )
    return stored, pl.concat([dup_in_batch, _duplicate_rejections(pairs, "device and event_id")])


def store_rejected(
    conn: psycopg.Connection, rejected: pl.DataFrame, raw_ids: pl.Series, batch_id: int
) -> int:
    """Replace the rejections of these raw messages (a re-run with a newer decoder may have fewer)."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM rejected WHERE raw_id = ANY(%s)", (raw_ids.to_list(),))
        if rejected.is_empty():
            return 0
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS stage_rejected (raw_id bigint, item int, stage text, "
            "reason text, detail text, topic text, arrived_at timestamptz) ON COMMIT DELETE ROWS"
        )
        _copy(
            cur,
            "stage_rejected",
            rejected.select("raw_id", "item", "stage", "reason", "detail", "topic", "arrived_at"),
        )
        cur.execute(
            """INSERT INTO rejected (raw_id, item, stage, reason, detail, topic, arrived_at, batch_id)
               SELECT raw_id, item, stage, reason, detail, topic, arrived_at, %s FROM stage_rejected
               ON CONFLICT (raw_id, item) DO UPDATE SET stage = excluded.stage, reason = excluded.reason,
                   detail = excluded.detail""",
            (batch_id,),
        )
        return rejected.height


@dataclass(frozen=True, slots=True)
class Reconciliation:
    raw: int
    with_facts: int
    rejected: int
    unaccounted: int


def reconcile(conn: psycopg.Connection, start: datetime, end: datetime) -> Reconciliation:
    """Every raw message of [start, end) must have a fact row or a rejection (design section 5)."""
    row = conn.execute(
        """SELECT count(*),
                  count(*) FILTER (WHERE facts),
                  count(*) FILTER (WHERE rej),
                  count(*) FILTER (WHERE NOT facts AND NOT rej)
           FROM (SELECT EXISTS (SELECT 1 FROM measurements m WHERE m.raw_id = r.raw_id)
                        OR EXISTS (SELECT 1 FROM events e WHERE e.raw_id = r.raw_id) AS facts,
                        EXISTS (SELECT 1 FROM rejected x WHERE x.raw_id = r.raw_id) AS rej
                 FROM raw_messages r WHERE r.arrived_at >= %s AND r.arrived_at < %s) t""",
        (start, end),
    ).fetchone()
    assert row is not None
    return Reconciliation(*(int(v) for v in row))
