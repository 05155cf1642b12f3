"""Baseline: paho subscriber buffering rows and writing them with one executemany per 0.5 s or 5,000 rows."""

from __future__ import annotations

import psycopg

from bench.e2e.baselines.buffered import BufferedSink
from bench.e2e.baselines.common import TABLE, Row, arguments, create_schema, subscribe_until_stopped


def main() -> None:
    args = arguments(__doc__)
    create_schema(args.url)
    conn = psycopg.connect(args.url)

    def flush(rows: list[Row]) -> None:
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {TABLE} (device, metric, ts, value) VALUES (%s, %s, %s, %s)", rows)
        conn.commit()

    subscribe_until_stopped(args.host, args.port, "bench-executemany-writer", BufferedSink(flush).add)


if __name__ == "__main__":
    main()
