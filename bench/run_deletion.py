"""Time deleting finished micro-batch runs: Dagster's public `instance.delete_run` one run at a time
against this project's bulk path (`dagster_project.dagster_internals.delete_runs_in_bulk`), on a scratch
instance with SQLite or PostgreSQL storage filled with synthetic runs (`bench.runs_ui.synth`: the sensor's
tags, two materializations and a check evaluation per run, ~10 events each; written in bulk on
PostgreSQL).

    .venv/bin/python -m bench.run_deletion --runs 500 --storage postgres
"""

from __future__ import annotations

import argparse
import os
import random
import time

from dagster import DagsterInstance

from bench.runs_ui import bulk
from bench.runs_ui.instance import scratch_instance
from bench.runs_ui.synth import plan_run, windows, write_runs
from dagster_project.dagster_internals import delete_runs_in_bulk
from dagster_project.lib.windows import HOUR_MS

WINDOW_MS = 60_000
CHUNK = 100


def fill(instance: DagsterInstance, first_ms: int, count: int) -> list[str]:
    rng = random.Random(7)
    planned = [plan_run(w) for w in windows(first_ms, count, WINDOW_MS)]
    write = bulk.write_chunk if bulk.supported(instance) else write_runs  # PostgreSQL: in bulk
    for n in range(0, count, CHUNK):
        write(instance, planned[n : n + CHUNK], rng, checks=True)
    return [p.run.run_id for p in planned]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="runs deleted by each path")
    parser.add_argument("--storage", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--batch", type=int, default=200, help="runs per bulk deletion (compaction's)")
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    end_ms = int(time.time() * 1000) // HOUR_MS * HOUR_MS - 2 * HOUR_MS
    first_ms = end_ms - 2 * args.runs * WINDOW_MS
    start_key = time.strftime("%Y-%m-%d-%H:00", time.gmtime((first_ms - first_ms % HOUR_MS) / 1000))
    with scratch_instance(args.storage, args.server, start_key, keep=False) as scratch:
        os.environ.update(scratch.env())
        with DagsterInstance.from_config(str(scratch.home)) as instance:
            started = time.monotonic()
            ids = fill(instance, first_ms, 2 * args.runs)
            print(
                f"{args.storage}: {len(ids)} runs written in {time.monotonic() - started:.1f} s", flush=True
            )
            public, bulk = ids[: args.runs], ids[args.runs :]
            files = [scratch.files()]
            started = time.monotonic()
            for run_id in public:
                instance.delete_run(run_id)
            public_s = time.monotonic() - started
            files.append(scratch.files())
            started = time.monotonic()
            for n in range(0, len(bulk), args.batch):
                delete_runs_in_bulk(instance, bulk[n : n + args.batch])
            bulk_s = time.monotonic() - started
            files.append(scratch.files())
            left = len(instance.get_run_ids())
    print(
        f"{args.storage}: delete_run {args.runs} runs in {public_s:.1f} s "
        f"({args.runs / public_s:.1f} runs/s); "
        f"bulk {args.runs} runs in {bulk_s:.2f} s ({args.runs / bulk_s:.1f} runs/s); {left} runs left; "
        f"load {os.getloadavg()[0]:.1f}"
        + (f"; storage files {files[0]} -> {files[1]} (delete_run) -> {files[2]} (bulk)" if files[0] else "")
    )


if __name__ == "__main__":
    main()
