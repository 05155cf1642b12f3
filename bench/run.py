"""Throughput of the Dagster side's stages, on this machine, with the simulator's message mix.

    .venv/bin/python -m bench.run [--messages 50000]

Prints one table; each stage is compared with a baseline measured in the same run, so the numbers mean
something on any machine: decoding against a floor that only decodes UTF-8 and parses JSON (what any
decoder must at least do), and each database stage against a bare COPY of the same rows into a temp table.
Needs the local PostgreSQL; uses a scratch database that it drops afterwards.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg

from dagster_project.raw_entries import raw_row
from dagster_project.storage import (
    RAW_COLUMNS,
    RAW_STAGE_COLUMNS,
    BatchInfo,
    land_raw,
    load_f2_catalog,
    load_raw,
    open_batch,
    store_events,
    store_measurements,
    store_rejected,
)
from dagster_project.validation import EventSchema, MeasurementSchema, split_valid
from iot_core.formats.batch import decode_batch
from iot_etl.migrate import apply_migrations, ensure_database
from simulator.messages import MessageFactory


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def json_floor(payloads: list[bytes]) -> None:
    for payload in payloads:
        try:
            text = payload.decode("utf-8")
            if text[:1] in "{[":
                json.loads(text)
        except (UnicodeDecodeError, ValueError):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    n = args.messages

    factory = MessageFactory(1, bad_share=0.05)
    start = datetime.now(UTC) - timedelta(minutes=30)
    sent = [factory.next(start + timedelta(microseconds=20 * i)) for i in range(n)]
    start_ms = int(start.timestamp() * 1000)
    entries = [
        (
            f"{start_ms + i // 50}-{i % 50}".encode(),
            {
                b"topic": m.topic.encode(),
                b"payload": m.payload,
                b"qos": b"1",
                b"retain": b"0",
                b"rx_us": str(start_ms * 1000 + 20 * i).encode(),
            },
        )
        for i, m in enumerate(sent)
    ]
    rows: list[tuple[str, float, float, str]] = []

    def row(stage: str, seconds: float, baseline: float | None, baseline_name: str) -> None:
        ratio = f"{seconds / baseline:.1f}x {baseline_name}" if baseline else ""
        rows.append((stage, n / seconds, seconds * 1e6 / n, ratio))

    db = f"iot_bench_{uuid.uuid4().hex[:8]}"
    url = f"{args.server}/{db}"
    ensure_database(url)
    try:
        apply_migrations(url)
        with psycopg.connect(url) as conn:
            catalog = load_f2_catalog(conn)
            t_rows, raw_rows = timed(lambda: [raw_row("bench", eid, f) for eid, f in entries])
            row("stream entries -> rows", t_rows, None, "")
            conn.execute(f"CREATE TEMP TABLE copy_floor ({RAW_STAGE_COLUMNS})")

            def copy_floor() -> None:
                with (
                    conn.cursor() as cur,
                    cur.copy(f"COPY copy_floor ({', '.join(RAW_COLUMNS)}) FROM STDIN") as copy,
                ):
                    for r in raw_rows:
                        copy.write_row(r)

            t_floor, _ = timed(copy_floor)
            row("COPY floor (raw rows)", t_floor, None, "")
            info = BatchInfo(
                "bench", "bench", start, start + timedelta(hours=1), "0-0", "0-0", ["bench"], "1"
            )
            batch_id = open_batch(conn, info)
            t_land, _ = timed(lambda: land_raw(conn, raw_rows, batch_id))
            row("land raw_messages", t_land, t_floor, "COPY floor")
            t_load, raw = timed(
                lambda: load_raw(conn, start - timedelta(hours=1), start + timedelta(hours=2))
            )
            row("load raw from archive", t_load, t_floor, "COPY floor")
            assert isinstance(raw, pl.DataFrame) and raw.height == n
            t_json, _ = timed(lambda: json_floor(raw["payload"].to_list()))
            row("UTF-8 + JSON floor", t_json, None, "")
            t_dec, decoded = timed(lambda: decode_batch(raw, catalog))
            row("decode (3 formats)", t_dec, t_json, "JSON floor")
            t_val, validated = timed(
                lambda: (
                    split_valid(decoded.measurements, MeasurementSchema),
                    split_valid(decoded.events, EventSchema),
                )
            )
            row("validate (pandera)", t_val, t_json, "JSON floor")
            (measurements, _), (events, _) = validated
            t_m, _ = timed(lambda: store_measurements(conn, measurements, batch_id))
            row(f"upsert {measurements.height} measurements", t_m, t_floor, "COPY floor")
            t_e, _ = timed(lambda: store_events(conn, events, batch_id))
            row(f"upsert {events.height} events", t_e, t_floor, "COPY floor")
            rejected = decoded.rejected.with_columns(arrived_at=pl.lit(start).cast(pl.Datetime("us", "UTC")))
            t_r, _ = timed(lambda: store_rejected(conn, rejected, raw["raw_id"], batch_id))
            row(f"store {rejected.height} rejections", t_r, t_floor, "COPY floor")
            total = t_land + t_load + t_dec + t_val + t_m + t_e + t_r
            row("whole batch (land .. store)", total, t_floor, "COPY floor")
            conn.rollback()
    finally:
        with psycopg.connect(f"{args.server}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")

    print(f"{n} simulated messages (all three formats, 5 % bad)\n")
    print(f"{'stage':<34} {'msg/s':>12} {'µs/msg':>9}  compared with")
    for stage, rate, us, ratio in rows:
        print(f"{stage:<34} {rate:>12,.0f} {us:>9.1f}  {ratio}")


if __name__ == "__main__":
    main()
