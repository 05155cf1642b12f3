"""Throughput of the Dagster side's stages, on this machine, with the simulator's message mix.

    .venv/bin/python -m bench.run [--messages 50000] [--kinds plain]

Times `land_window` and `decode_window`, the functions the `raw_messages` and `telemetry` assets run,
with the stages inside `decode_window` (load, decode, validate, store) as it reports them.
Prints one table; each stage is compared with a baseline measured in the same run, so the numbers mean
something on any machine: decoding against a floor that only decodes UTF-8 and parses JSON (what any
decoder must at least do), and each database stage against a bare COPY of the same rows into a temp table.
Needs the local PostgreSQL; uses a scratch database that it drops afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg

from dagster_project.lib.batch import Decoded, decode_window, land_window
from dagster_project.lib.feedback import FeedbackTopics
from dagster_project.lib.raw_entries import raw_row
from dagster_project.lib.storage.batches import BatchInfo
from dagster_project.lib.storage.raw_archive import load_raw
from dagster_project.lib.windows import HOUR_MS, Window
from dagster_project.run_launcher import import_preloaded
from iot_core.formats.batch import DecodeOptions
from iot_core.rows import STREAM_ENTRY
from iot_core.settings import Settings
from iot_etl.migrate import apply_migrations, ensure_database
from simulator.expected import KINDS
from simulator.messages import MessageFactory

TOPICS = FeedbackTopics("qs/v1/{device_id}/acks", "qs/v1/deadletter")
PAGE_ROWS: int = Settings.model_fields["decode_page_rows"].default


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


Row = tuple[str, float, float, str]  # stage, msg/s, µs/msg, compared with


def stream_entries(n: int, kinds: tuple[str, ...]) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """`n` simulated messages (5 % bad) as the listener writes them into its stream, 20 µs apart."""
    factory = MessageFactory(1, kinds=kinds, bad_share=0.05)
    start = datetime.now(UTC) - timedelta(minutes=30)
    sent = [factory.next(start + timedelta(microseconds=20 * i)) for i in range(n)]
    start_ms = int(start.timestamp() * 1000)
    return [
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="message formats to simulate, e.g. plain (default: all)"
    )
    parser.add_argument(
        "--page-rows",
        type=int,
        default=PAGE_ROWS,
        help=f"decode the window this many messages at a time, the next page read ahead on a second "
        f"connection, as the telemetry asset does (default: {PAGE_ROWS:,}, the product's default)",
    )
    args = parser.parse_args()
    n = args.messages
    import_preloaded()  # a run worker starts with these imported: they are not a stage's cost
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    rows, _ = measure(n, kinds, args.server, args.page_rows)
    described = "all three formats" if set(kinds) == set(KINDS) else ", ".join(kinds)
    print(f"{n} simulated messages ({described}, 5 % bad), load average {os.getloadavg()}\n")
    print(f"{'stage':<34} {'msg/s':>12} {'µs/msg':>9}  compared with")
    for stage, rate, us, ratio in rows:
        print(f"{stage:<34} {rate:>12,.0f} {us:>9.1f}  {ratio}")


def measure(
    n: int, kinds: tuple[str, ...], server: str, page_rows: int = PAGE_ROWS
) -> tuple[list[Row], Decoded]:
    """Land and decode `n` simulated messages in a scratch database; the table's rows and the outcome."""
    entries = stream_entries(n, kinds)
    start_ms = int(entries[0][0].split(b"-")[0])
    start = datetime.fromtimestamp(start_ms / 1000, UTC)
    rows: list[Row] = []

    def row(stage: str, seconds: float, baseline: float | None, baseline_name: str) -> None:
        ratio = f"{seconds / baseline:.1f}x {baseline_name}" if baseline else ""
        rows.append((stage, n / seconds, seconds * 1e6 / n, ratio))

    db = f"iot_bench_{uuid.uuid4().hex[:8]}"
    url = f"{server}/{db}"
    ensure_database(url)
    try:
        apply_migrations(url)
        with psycopg.connect(url) as conn, psycopg.connect(url, autocommit=True) as reader:
            t_rows, raw_rows = timed(lambda: [raw_row("bench", eid, f) for eid, f in entries])
            row("stream entries -> rows", t_rows, None, "")
            conn.execute(STREAM_ENTRY.staging_ddl("copy_floor"))

            def copy_floor() -> None:
                with (
                    conn.cursor() as cur,
                    cur.copy(f"COPY copy_floor ({STREAM_ENTRY.column_list()}) FROM STDIN") as copy,
                ):
                    for r in raw_rows:
                        copy.write_row(r)

            t_floor, _ = timed(copy_floor)
            row("COPY floor (raw rows)", t_floor, None, "")
            info = BatchInfo(
                "bench", "bench", start, start + timedelta(hours=1), "0-0", "0-0", ["bench"], "1"
            )
            window = Window(start_ms, start_ms + HOUR_MS)
            t_land, _ = timed(lambda: (land_window(conn, info, [raw_rows]), conn.commit()))
            row("land_window (raw_messages)", t_land, t_floor, "COPY floor")
            options = DecodeOptions()
            t_batch, decoded = timed(
                lambda: decode_window(conn, info, window, options, TOPICS, page_rows, reader)
            )
            assert isinstance(decoded, Decoded) and decoded.raw == n
            raw = load_raw(conn, start - timedelta(hours=1), start + timedelta(hours=2))
            t_json, _ = timed(lambda: json_floor(raw["payload"].to_list()))
            row("UTF-8 + JSON floor", t_json, None, "")
            floors = {
                "load": (t_floor, "COPY floor"),
                "decode": (t_json, "JSON floor"),
                "validate": (t_json, "JSON floor"),
                "store": (t_floor, "COPY floor"),
                "feedback": (None, ""),
            }
            for stage, seconds in decoded.seconds.items():
                baseline, name = floors[stage]
                row(f"  decode_window: {stage}", seconds, baseline, name)
            row("decode_window (telemetry)", t_batch, t_floor, "COPY floor")
            row("whole batch (land + decode_window)", t_land + t_batch, t_floor, "COPY floor")
            conn.rollback()
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")

    assert isinstance(decoded, Decoded)
    return rows, decoded


if __name__ == "__main__":
    main()
