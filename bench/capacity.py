"""What each part carries per core on this machine, and the deployment that follows for 10k-200k msg/s.

    .venv/bin/python -m bench.capacity [--messages 30000] [--headroom 0.5]

Small runs of the other benches, each well under a minute:
- the listener draining a QoS 1 backlog from a private Mosquitto into Redis (`bench.listener`), per core
  from the CPU seconds of this process while it drains (the listener runs in it, in its own threads);
- a run worker's whole batch (`land_window` + `decode_window`, `bench.run`) for plain metrics, events, F2
  frames and the simulator's default mix; one run is one process working in order, so its wall-clock rate
  is what one run worker carries (its own core, while PostgreSQL works on another);
- PostgreSQL: the COPY floor of the same run (raw rows/s of one COPY stream), and the rows the database
  takes per message of the mix;
- Redis: memory per stream entry of the mix (`MEMORY USAGE`) and the rate of pipelined XADDs of one client.
Then prints the sizing for 10k, 50k and 200k msg/s with the formulas of `bench.sizing`.
Needs the local PostgreSQL and Redis; cleans up its database, streams and broker.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import uuid

import redis as redis_lib

from bench.listener import bench_settings, drain_listener
from bench.run import measure, stream_entries
from bench.sizing import Capacity, size
from dagster_project.run_launcher import import_preloaded
from ingest_listener.listener import Listener
from iot_core.settings import Settings
from simulator.expected import KINDS
from tests.support.mosquitto import PrivateMosquitto

FORMATS: dict[str, tuple[str, ...]] = {"plain": ("plain",), "event": ("event",), "f2": ("f2",), "mix": KINDS}
RATES = (10_000, 50_000, 200_000)
PAYLOAD = b'{"value": 21.5, "ts": "2026-01-01T00:00:00Z"}'


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def listener_rates(n: int, redis_url: str) -> tuple[float, float]:
    """The listener's drain rate (msg/s) and its msg/s per CPU second, on a backlog of `n` messages."""
    client = redis_lib.Redis.from_url(redis_url)
    with PrivateMosquitto() as broker:
        settings = bench_settings(broker, redis_url)
        try:
            with Listener(settings, redis_client=client) as listener:
                assert listener.wait_ready(10), "listener did not subscribe"
            broker.publish_many(
                ((f"devices/bench-{i % 100}/temperature", PAYLOAD) for i in range(n)), timeout=120
            )
            cpu = cpu_seconds()
            wall = drain_listener(settings, client, n, 120)
            return n / wall, n / (cpu_seconds() - cpu)
        finally:
            client.delete(settings.stream_prefix)


def redis_figures(n: int, redis_url: str) -> tuple[float, float]:
    """Bytes per stream entry of the mix, and pipelined XADDs/s of one client (batches of 1,000)."""
    client = redis_lib.Redis.from_url(redis_url)
    key = f"bench-capacity:{uuid.uuid4().hex[:8]}"
    entries = stream_entries(n, KINDS)
    try:
        start = time.perf_counter()
        for i in range(0, n, 1000):
            pipe = client.pipeline(transaction=False)
            for _, fields in entries[i : i + 1000]:
                pipe.xadd(key, fields)  # type: ignore[arg-type]
            pipe.execute()
        seconds = time.perf_counter() - start
        used = client.memory_usage(key, samples=0) or 0
        return used / n, n / seconds
    finally:
        client.delete(key)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--headroom", type=float, default=0.5, help="share of a measured rate to plan on")
    parser.add_argument("--redis-node-gb", type=float, default=16.0)
    args = parser.parse_args(argv)
    n = args.messages
    defaults = Settings.model_fields
    margin_s = defaults["stream_trim_margin_s"].default + 2 * defaults["window_seconds"].default
    import_preloaded()
    load_start = os.getloadavg()

    drain, listener_core = listener_rates(n, args.redis)
    worker: dict[str, float] = {}
    copy_floor: list[float] = []
    rows_per_message = db_per_core = 0.0
    for name, kinds in FORMATS.items():
        rows, decoded = measure(n, kinds, args.server)
        by_stage = {stage.strip(): rate for stage, rate, _, _ in rows}
        worker[name] = by_stage["whole batch (land + decode_window)"]
        copy_floor.append(by_stage["COPY floor (raw rows)"])
        if name == "mix":
            written = decoded.raw + decoded.measurements + decoded.events + decoded.rejected.height
            rows_per_message = written / decoded.raw
            db_stages = ("land_window (raw_messages)", "decode_window: load", "decode_window: store")
            db_per_core = n / sum(n / by_stage[stage] for stage in db_stages)
    entry_bytes, xadd = redis_figures(n, args.redis)
    cap = Capacity(listener_core, worker, max(copy_floor), rows_per_message, db_per_core, entry_bytes, xadd)
    load_end = os.getloadavg()

    print(
        f"\n{n:,} messages per measurement, {os.cpu_count()} cores, load average {load_start} -> {load_end}\n"
    )
    print(f"| {'part':<44} | {'per core':>14} |\n|{'-' * 46}|{'-' * 16}:|")
    measured = [
        (f"listener, msg/s (drain {drain:,.0f} msg/s wall)", f"{listener_core:,.0f}"),
        *((f"run worker, msg/s, {name}", f"{rate:,.0f}") for name, rate in worker.items()),
        ("PostgreSQL COPY floor, raw rows/s", f"{cap.copy_rows_per_s:,.0f}"),
        ("database rows per message of the mix", f"{rows_per_message:.2f}"),
        ("run's database stages, msg/s of the mix", f"{db_per_core:,.0f}"),
        ("Redis bytes per stream entry of the mix", f"{entry_bytes:,.0f}"),
        ("Redis XADD/s, one client, pipelined", f"{xadd:,.0f}"),
    ]
    for part, value in measured:
        print(f"| {part:<44} | {value:>14} |")
    print(
        f"\nheadroom {args.headroom}, Redis margin {margin_s:,} s (trim margin + two windows), "
        f"Redis node {args.redis_node_gb:g} GB filled to 80 %; formulas in bench/sizing.py\n"
    )
    print(
        "| msg/s | listeners | run workers (mix) | run workers (plain) | shards | Redis GB | Redis nodes"
        " | DB rows/s | DB cores (COPY floor - stages) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for rate in RATES:
        s = size(rate, cap, headroom=args.headroom, margin_s=margin_s, node_gb=args.redis_node_gb)
        plain = size(rate, cap, mix="plain", headroom=args.headroom, margin_s=margin_s)
        print(
            f"| {rate:,} | {s.listeners} | {s.run_workers} | {plain.run_workers} | {s.shards}"
            f" | {s.redis_gb:,.1f} | {s.redis_nodes} | {s.db_rows_per_s:,.0f}"
            f" | {s.db_cores}-{s.db_cores_stages} |"
        )


if __name__ == "__main__":
    main()
