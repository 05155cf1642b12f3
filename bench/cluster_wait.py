"""What the listener's `WAIT` for a replica costs: its writer on a private three-master Redis Cluster.

    .venv/bin/python -m bench.cluster_wait [--entries 60000] [--batch 500] [--repeat 3]

Writes `--entries` plain-metric entries over three shards in pipelines of `--batch` (the listener's
flush count) with the listener's `StreamWriter`, with `IOT_REDIS_WAIT_REPLICAS` 0 and 1, alternating, on
one cluster of three masters with a replica each (six `redis-server` processes on loopback, so the
replicas compete with the masters and the writer for the same cores). Prints entries/s and the median
batch time of each; no broker, no Dagster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from ingest_listener.stream_writer import StreamWriter, entry_for_message
from iot_core.redis_client import redis_client
from tests.support.redis_cluster import PrivateRedisCluster

SHARDS = 3


def run(url: str, wait: int, entries: int, batch: int, prefix: str) -> tuple[float, float]:
    """Entries/s and the median batch time (ms) of one pass."""
    client = redis_client(url, "cluster", retries=0, socket_timeout=10)
    writer = StreamWriter(client, wait_replicas=wait, wait_timeout_ms=1000)
    payload = b'{"value": 21.5, "unit": "C"}'
    batches = [
        [
            entry_for_message(f"devices/d{(b * batch + i) % 97}/t", payload, 1, False, prefix=prefix,
                              shards=SHARDS, cluster=True)
            for i in range(batch)
        ]
        for b in range(entries // batch)
    ]  # fmt: skip
    times = []
    started = time.perf_counter()
    for entries_of_batch in batches:
        t = time.perf_counter()
        results = writer.write(entries_of_batch)
        times.append(time.perf_counter() - t)
        assert not any(isinstance(r, Exception) for r in results), results[:3]
    elapsed = time.perf_counter() - started
    client.close()
    return len(batches) * batch / elapsed, statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rates: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
    with PrivateRedisCluster() as cluster:
        for r in range(args.repeat):
            for wait in (0, 1) if r % 2 == 0 else (1, 0):
                rates[wait].append(run(cluster.url, wait, args.entries, args.batch, f"bench:{r}:{wait}"))
    for wait, results in rates.items():
        per_s = ", ".join(f"{rate:,.0f}" for rate, _ in results)
        batch_ms = ", ".join(f"{ms:.1f}" for _, ms in results)
        print(f"WAIT {wait}: entries/s {per_s}; median batch of {args.batch} (ms) {batch_ms}")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
