"""Baseline: paho subscriber with one autocommitted INSERT per message, inside the message callback."""

from __future__ import annotations

import psycopg

from bench.e2e.baselines.common import TABLE, Row, arguments, create_schema, subscribe_until_stopped


def main() -> None:
    args = arguments(__doc__)
    create_schema(args.url)
    conn = psycopg.connect(args.url, autocommit=True)

    def insert(row: Row) -> None:
        conn.execute(f"INSERT INTO {TABLE} (device, metric, ts, value) VALUES (%s, %s, %s, %s)", row)

    subscribe_until_stopped(args.host, args.port, "bench-insert-writer", insert)


if __name__ == "__main__":
    main()
