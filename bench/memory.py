"""Peak memory and time of one micro-batch run by window size: does a run's cost grow linearly?

    .venv/bin/python -m bench.memory [--sizes 10000,100000,1000000] [--page-rows 50000]

For each size it writes that many simulated plain-metric messages into a private Redis stream (one
window's worth), then a fresh process does what a run's two steps do: `land_window` over the stream's
pages (as the `raw_messages` asset reads them) and `decode_window` in pages of `--page-rows` (the next
one read ahead on a second connection, as the `telemetry` asset does), in a scratch
database, and reports its peak RSS (`ru_maxrss`), the seconds of each step and the reconciliation of the
window. The process's RSS after its imports is printed too: what a run costs before it reads anything.
Needs the local PostgreSQL and Redis; drops its database and stream afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import redis as redis_lib

PAGE = 10_000  # messages generated and written to Redis at a time
SPACING_US = 20  # arrival spacing of the simulated messages


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fill_stream(client: redis_lib.Redis, stream: str, n: int, start_ms: int) -> None:
    """`n` simulated plain-metric messages as the listener writes them, 50 per millisecond from `start_ms`."""
    from simulator.messages import MessageFactory

    factory = MessageFactory(1, kinds=("plain",), bad_share=0.05)
    start = datetime.fromtimestamp(start_ms / 1000, UTC)
    for first in range(0, n, PAGE):
        pipe = client.pipeline(transaction=False)
        for i in range(first, min(n, first + PAGE)):
            m = factory.next(start + timedelta(microseconds=SPACING_US * i))
            fields = {"topic": m.topic, "payload": m.payload, "qos": 1, "retain": 0}
            pipe.xadd(
                stream,
                {**fields, "rx_us": start_ms * 1000 + SPACING_US * i},
                id=f"{start_ms + i // 50}-{i % 50}",
            )
        pipe.execute()


def run_once(redis_url: str, stream: str, db_url: str, start_ms: int, end_ms: int, page_rows: int) -> dict:
    """One run's two steps over [start_ms, end_ms), in this process; returns what it measured."""
    from dagster_project.defs.resources import RedisStreamsResource
    from dagster_project.lib.batch import decode_window, land_window
    from dagster_project.lib.raw_entries import raw_row
    from dagster_project.lib.storage.batches import BatchInfo
    from dagster_project.lib.storage.quality import reconcile
    from dagster_project.lib.windows import Window
    from iot_core.formats.batch import DecodeOptions
    from iot_core.streams import utc_from_ms

    rss_start = _rss_mb()
    window = Window(start_ms, end_ms)
    redis = RedisStreamsResource(url=redis_url, stream_prefix=stream)
    info = BatchInfo(
        "bench", "bench", utc_from_ms(start_ms), utc_from_ms(end_ms), "0-0", "0-0", [stream], "1"
    )
    with psycopg.connect(db_url) as conn, psycopg.connect(db_url, autocommit=True) as reader:
        clock = time.perf_counter()
        pages = (
            [raw_row(stream, entry_id, fields) for entry_id, fields in page]
            for page in redis.read_range(stream, window)
        )
        landed = land_window(conn, info, pages)
        conn.commit()
        land_s = time.perf_counter() - clock
        clock = time.perf_counter()
        decoded = decode_window(conn, info, window, DecodeOptions(), None, page_rows, reader)
        conn.commit()
        decode_s = time.perf_counter() - clock
        check = reconcile(conn, *window.utc_bounds)
    return {
        "messages": landed.read,
        "decoded": decoded.raw,
        "land_s": land_s,
        "decode_s": decode_s,
        "rss_after_imports_mb": rss_start,
        "peak_rss_mb": _rss_mb(),
        "unaccounted": check.unaccounted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--page-rows", type=int, default=50_000)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--child", nargs=4, metavar=("STREAM", "DB_URL", "START_MS", "END_MS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        stream, db_url, start_ms, end_ms = args.child
        print(json.dumps(run_once(args.redis, stream, db_url, int(start_ms), int(end_ms), args.page_rows)))
        return

    from iot_etl.migrate import apply_migrations, ensure_database

    client = redis_lib.Redis.from_url(args.redis)
    print(f"load average {os.getloadavg()}, decode pages of {args.page_rows:,} rows")
    print(
        f"{'messages':>10} {'land s':>8} {'decode s':>9} {'µs/msg':>7} {'RSS at start':>13} {'peak RSS':>9}"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        tag = uuid.uuid4().hex[:8]
        stream, db = f"bench-memory:{tag}", f"iot_bench_mem_{tag}"
        start_ms = int((time.time() - 1800) * 1000)
        end_ms = start_ms + n // 50 + 1
        db_url = f"{args.server}/{db}"
        ensure_database(db_url)
        try:
            apply_migrations(db_url)
            fill_stream(client, stream, n, start_ms)
            command = [
                sys.executable,
                "-m",
                "bench.memory",
                "--redis",
                args.redis,
                "--page-rows",
                str(args.page_rows),
            ]
            out = subprocess.run(
                [*command, "--child", stream, db_url, str(start_ms), str(end_ms)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            assert r["messages"] == r["decoded"] == n and r["unaccounted"] == 0, r
            total = r["land_s"] + r["decode_s"]
            print(
                f"{n:>10,} {r['land_s']:>8.1f} {r['decode_s']:>9.1f} {total * 1e6 / n:>7.1f}"
                f" {r['rss_after_imports_mb']:>10.0f} MB {r['peak_rss_mb']:>6.0f} MB",
                flush=True,
            )
        finally:
            client.delete(stream)
            with psycopg.connect(f"{args.server}/postgres", autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
