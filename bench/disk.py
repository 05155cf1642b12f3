"""What the pipeline keeps costs, per million messages: Redis stream memory and each table on disk.

    .venv/bin/python -m bench.disk [--messages 200000] [--server postgresql://postgres@127.0.0.1:5432]

Lands and decodes the simulator's message mix (all three formats, 5 % bad) with `land_window` and
`decode_window`, the functions the assets run, one hour of arrival per batch, in a scratch database;
then reports each table's size (indexes included; on TimescaleDB also after compressing every chunk)
and the memory the same entries take in a scratch Redis stream, scaled to one million messages.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime

import psycopg
import redis

from dagster_project.lib.batch import decode_window, land_window
from dagster_project.lib.feedback import FeedbackTopics
from dagster_project.lib.raw_entries import raw_row
from dagster_project.lib.retention import hypertables
from dagster_project.lib.storage.batches import BatchInfo
from dagster_project.lib.storage.compactions import table_sizes
from dagster_project.lib.windows import HOUR_MS, Window
from iot_core.formats.batch import DecodeOptions
from iot_etl.migrate import apply_migrations, ensure_database
from simulator.messages import MessageFactory

TABLES = ["raw_messages", "measurements", "events", "rejected", "batches"]
TOPICS = FeedbackTopics("qs/v1/{device_id}/acks", "qs/v1/deadletter")
SPACING_MS = 50  # 20 msg/s, the simulator's default rate


def entries(n: int, start_ms: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
    factory = MessageFactory(1, bad_share=0.05)
    out = []
    for i in range(n):
        ms = start_ms + i * SPACING_MS
        message = factory.next(datetime.fromtimestamp(ms / 1000, UTC))
        fields = {
            b"topic": message.topic.encode(),
            b"payload": message.payload,
            b"qos": b"1",
            b"retain": b"0",
            b"rx_us": str(ms * 1000).encode(),
        }
        out.append((f"{ms}-0".encode(), fields))
    return out


def per_million(size: int, n: int) -> str:
    return f"{size / n * 1_000_000 / 1_048_576:,.0f} MB"


def redis_memory(url: str, stream_entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
    client = redis.Redis.from_url(url)
    stream = f"bench:disk:{uuid.uuid4().hex[:8]}"
    try:
        pipe = client.pipeline(transaction=False)
        for entry_id, fields in stream_entries:
            pipe.xadd(stream, fields, id=entry_id)
            if len(pipe) >= 1000:
                pipe.execute()
        pipe.execute()
        return int(client.memory_usage(stream, samples=0) or 0)
    finally:
        client.delete(stream)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    n = args.messages
    hours = n * SPACING_MS // HOUR_MS + 1
    start_ms = (int(time.time() * 1000) // HOUR_MS - hours - 1) * HOUR_MS
    stream_entries = entries(n, start_ms)

    db = f"iot_bench_{uuid.uuid4().hex[:8]}"
    url = f"{args.server}/{db}"
    ensure_database(url)
    try:
        apply_migrations(url)
        for hour in range(hours):
            window = Window(start_ms + hour * HOUR_MS, start_ms + (hour + 1) * HOUR_MS)
            low, high = window.start_ms, window.end_ms
            rows = [
                raw_row("bench", eid, fields)
                for eid, fields in stream_entries
                if low <= int(eid.split(b"-")[0]) < high
            ]
            info = BatchInfo(
                f"bench-{hour}",
                window.partition_key,
                datetime.fromtimestamp(low / 1000, UTC),
                datetime.fromtimestamp(high / 1000, UTC),
                f"{low}-0",
                f"{high - 1}-0",
                ["bench"],
                "1",
            )
            with psycopg.connect(url) as conn:
                land_window(conn, info, [rows])
                decode_window(conn, info, window, DecodeOptions(), TOPICS)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            sizes = table_sizes(conn, TABLES)
            compressed: dict[str, int] = {}
            for table in sorted(hypertables(conn)):
                conn.execute(
                    f"SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('{table}') c"
                )
                compressed[table] = table_sizes(conn, [table])[table]
    finally:
        with psycopg.connect(f"{args.server}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    stream_bytes = redis_memory(args.redis, stream_entries)

    print(
        f"{n:,} simulated messages over {hours} hours (all three formats, 5 % bad), per million messages:\n"
    )
    print(f"{'what':<26} {'size':>10}  {'compressed':>10}")
    print(f"{'Redis stream (memory)':<26} {per_million(stream_bytes, n):>10}")
    for table in TABLES:
        after = per_million(compressed[table], n) if table in compressed else ""
        print(f"{table:<26} {per_million(sizes[table], n):>10}  {after:>10}")
    total = sum(compressed.get(t, sizes[t]) for t in TABLES)
    print(f"{'all tables':<26} {per_million(sum(sizes.values()), n):>10}  {per_million(total, n):>10}")


if __name__ == "__main__":
    main()
