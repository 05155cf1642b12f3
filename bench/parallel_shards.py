"""One window of three shards: one run of every stream against three shard runs at once.

    .venv/bin/python -m bench.parallel_shards [--messages 150000] [--repeats 3]

Fills one closed window of three shards with plain readings (devices spread over the shards as the listener
spreads them), then processes it once as one run of every stream (in this process) and once, on a fresh
database, as three runs of one shard each, in three processes started before the clock starts (a run worker
has its libraries and the code location imported). Each is the whole `micro_batch_job`: land, decode,
rollups and the hour's checks. Needs the local PostgreSQL and Redis; removes its databases and streams.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from multiprocessing.synchronize import Event

import psycopg
import redis
from dagster import DagsterInstance

from dagster_project.defs.ingest.sensors import run_request
from dagster_project.defs.ingest.shards import Scope
from dagster_project.defs.resources import resources_from_settings
from dagster_project.lib.windows import HOUR_MS, Window, floor_to
from iot_core.settings import Settings
from iot_core.streams import stream_for_topic, stream_names
from tests.support.pipeline import execute_request
from tests.support.shards import redis_ms, sharded_settings

SHARDS = 3


def fill(settings: Settings, window: Window, messages: int) -> None:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    pipe = client.pipeline(transaction=False)
    for i in range(messages):
        topic = f"devices/d{i % 300}/temperature"
        ms = window.start_ms + i * (window.end_ms - window.start_ms - 1) // messages
        stream = stream_for_topic(topic, settings.stream_prefix, SHARDS)
        fields = {
            "topic": topic,
            "payload": f"{i % 50}.5",
            "qos": "1",
            "retain": "0",
            "rx_us": str(ms * 1000 + i),
        }
        pipe.xadd(stream, fields, id=f"{ms}-{i + 1}")
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    client.close()


def run(settings: Settings, window: Window, shard: int | None) -> None:
    scope = None if shard is None else Scope(shard, (stream_names(settings.stream_prefix, SHARDS)[shard],))
    with DagsterInstance.ephemeral() as instance:
        request = run_request(window, scope=scope)
        assert execute_request(request, instance, resources_from_settings(settings)).success


def shard_worker(settings: Settings, window: Window, shard: int, ready: mp.Queue, go: Event) -> None:
    import dagster_project.definitions  # noqa: F401  (imported before the clock starts, as by a run worker)

    ready.put(shard)
    go.wait()
    run(settings, window, shard)


def measure(base: Settings, messages: int, parallel: bool) -> float:
    with sharded_settings(base, SHARDS) as settings:
        hour = floor_to(redis_ms(settings), HOUR_MS) - 2 * HOUR_MS
        window = Window(hour, hour + settings.window_ms)
        fill(settings, window, messages)
        if not parallel:
            started = time.monotonic()
            run(settings, window, None)
            took = time.monotonic() - started
        else:
            context = mp.get_context("spawn")  # a fork of a process with Dagster's threads can hang
            ready, go = context.Queue(), context.Event()
            workers = [
                context.Process(target=shard_worker, args=(settings, window, n, ready, go))
                for n in range(SHARDS)
            ]
            for worker in workers:
                worker.start()
            for _ in workers:
                ready.get(timeout=300)
            started = time.monotonic()
            go.set()
            for worker in workers:
                worker.join()
            took = time.monotonic() - started
            assert all(w.exitcode == 0 for w in workers)
        with psycopg.connect(settings.database_url.get_secret_value()) as conn:
            stored = conn.execute("SELECT count(*) FROM measurements").fetchone()
        assert stored == (messages,), stored
        return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=150_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = Settings()
    for _ in range(args.repeats):
        for parallel, what in ((False, "one run of every stream"), (True, f"{SHARDS} shard runs at once")):
            took = measure(base, args.messages, parallel)
            print(
                f"{what:28} {args.messages} messages  {took:5.1f} s  {args.messages / took:8.0f} msg/s",
                flush=True,
            )


if __name__ == "__main__":
    main()
