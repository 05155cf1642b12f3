"""A year of micro-batch runs in a Dagster instance: what the UI's pages cost, before and after pruning.

    .venv/bin/python -m bench.runs_ui --runs 525600 --storage sqlite|postgres [--keep-days 7]

Fills a fresh Dagster instance (storage as `iot-etl up` configures it; PostgreSQL in a database of its
own) with --runs consecutive 60 s micro-batch runs ending now, synthesised through Dagster's storage
APIs (see `synth` and `bulk`); starts the real `dagster-webserver` on the project's workspace and times
the queries the UI sends for the Runs page, the asset page of `telemetry` and its partitions bar (first
call, then median and max of --repeat); runs `prune_runs`, the function the `compaction` asset calls,
with every run older than --keep-days pruned (one call per compaction budget, as the hourly schedule
would, until done); then times the same queries again. Prints a table and writes --json. Every
measurement carries the 1-minute load average: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from dagster import DagsterInstance, RunsFilter

from bench.runs_ui import bulk
from bench.runs_ui.instance import Scratch, scratch_instance
from bench.runs_ui.synth import plan_run, windows, write_runs
from bench.runs_ui.webserver import QUERIES, time_query
from dagster_project.defs.maintenance.runs import MICRO_TAG, prune_runs
from dagster_project.lib.windows import HOUR_MS, PARTITION_FORMAT
from iot_core.streams import utc_from_ms
from tests.support.webserver import ROOT, webserver

WINDOW_MS = 60_000


def load() -> float:
    return round(os.getloadavg()[0], 2)


def fill(instance: DagsterInstance, first_ms: int, runs: int, checks: bool, log_every_s: float = 60) -> dict:
    """Synthesise the runs, in chunks; returns how long it took."""
    fast = bulk.supported(instance)
    chunk_size = 1000 if fast else 100
    rng = random.Random(42)
    started = time.monotonic()
    last_log = started
    loads = [load()]
    for offset in range(0, runs, chunk_size):
        count = min(chunk_size, runs - offset)
        chunk = [plan_run(w) for w in windows(first_ms + offset * WINDOW_MS, count, WINDOW_MS)]
        if fast:
            bulk.write_chunk(instance, chunk, rng, checks)
        else:
            write_runs(instance, chunk, rng, checks)
        if time.monotonic() - last_log > log_every_s:
            last_log = time.monotonic()
            done, elapsed = offset + count, last_log - started
            loads.append(load())
            rate = done / elapsed
            print(f"  {done:,} runs in {elapsed:,.0f} s ({rate:,.1f}/s), load {loads[-1]}", flush=True)
    seconds = time.monotonic() - started
    return {
        "path": "bulk (row builders of Dagster's SQL storage)" if fast else "storage methods, run by run",
        "seconds": round(seconds, 1),
        "runs_per_s": round(runs / seconds, 1),
        "year_hours_extrapolated": round(525_600 / (runs / seconds) / 3600, 1),
        "load_avg": [*loads, load()],
    }


def measure(scratch: Scratch, port: int, repeat: int) -> dict[str, Any]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("IOT_", "DAGSTER_"))},
        **scratch.env(),
        "IOT_DATABASE_URL": scratch.settings.database_url.get_secret_value(),
        "IOT_PARTITIONS_START": scratch.settings.partitions_start,
        "IOT_DAGSTER_HOME": str(scratch.home),
        "IOT_STREAM_PREFIX": scratch.settings.stream_prefix,
    }
    with webserver(env, port) as load_s:
        timings = [time_query(port, query, repeat) for query in QUERIES]
    return {"webserver_load_s": round(load_s, 1), "queries": timings}


def prune(scratch: Scratch, instance: DagsterInstance, before: datetime, budget_s: float) -> dict[str, Any]:
    """`prune_runs` called as the hourly compaction would, one budget at a time, until done."""
    calls, deleted, hours = 0, 0, 0
    started = time.monotonic()
    loads = [load()]
    with psycopg.connect(scratch.settings.database_url.get_secret_value(), autocommit=True) as conn:
        while True:
            calls += 1
            pruned = prune_runs(instance, conn, before, time.monotonic() + budget_s)
            deleted += pruned.runs_deleted
            hours += len(pruned.hours_summarised)
            loads.append(load())
            elapsed = time.monotonic() - started
            print(
                f"  prune call {calls}: {deleted:,} runs deleted, {hours:,} hours summarised, "
                f"{elapsed:,.0f} s, load {loads[-1]}",
                flush=True,
            )
            if pruned.done:
                break
    seconds = time.monotonic() - started
    return {
        "seconds": round(seconds, 1),
        "calls": calls,
        "budget_s": budget_s,
        "runs_deleted": deleted,
        "hours_summarised": hours,
        "runs_per_s": round(deleted / seconds, 1) if seconds else None,
        "load_avg": loads,
    }


def micro_runs(instance: DagsterInstance) -> int:
    return instance.get_runs_count(RunsFilter(tags=dict([MICRO_TAG])))


def table(result: dict[str, Any]) -> str:
    before, after = result["before"]["queries"], result["after"]["queries"]
    lines = [
        f"{result['storage']}: {result['runs_before']:,} runs before, {result['runs_after']:,} after pruning",
        f"{'query':<36} " + " | ".join([f"{'first s':>8} {'median s':>9} {'max s':>7}"] * 2),
        f"{'':<36} {'before':^26} | {'after':^26}",
    ]
    for b, a in zip(before, after, strict=True):
        lines.append(
            f"{b['label']:<36} {b['first_s']:>8.3f} {b['median_s']:>9.3f} {b['max_s']:>7.3f} | "
            f"{a['first_s']:>8.3f} {a['median_s']:>9.3f} {a['max_s']:>7.3f}"
        )
    mib = 1024 * 1024
    lines.append(
        f"disk: {result['disk_before'] / mib:,.0f} MiB before, {result['disk_after'] / mib:,.0f} MiB after"
        + (
            f" ({result['files_before']:,} -> {result['files_after']:,} files)"
            if result["files_before"]
            else ""
        )
    )
    fill_ = result["fill"]
    lines.append(
        f"insert: {fill_['seconds']:,.0f} s, {fill_['runs_per_s']:,.1f} runs/s ({fill_['path']}); a year "
        f"would take {fill_['year_hours_extrapolated']:,.1f} h; prune: {result['prune']['seconds']:,.0f} s, "
        f"{result['prune']['runs_per_s']} runs/s"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=525_600, help="micro-batch runs (60 s windows)")
    parser.add_argument("--storage", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--keep-days", type=float, default=7.0, help="runs younger than this are kept")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per query after the first")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per prune call (compaction)")
    parser.add_argument("--no-checks", action="store_true", help="no check evaluations")
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--port", type=int, default=3391)
    parser.add_argument(
        "--json", type=Path, default=None, help="default: .iot-etl/bench/runs_ui_<storage>_<runs>.json"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch instance and databases")
    args = parser.parse_args()

    end_ms = int(time.time() * 1000) // WINDOW_MS * WINDOW_MS
    first_ms = end_ms - args.runs * WINDOW_MS
    start_key = utc_from_ms(first_ms - first_ms % HOUR_MS).strftime(PARTITION_FORMAT)
    result: dict[str, Any] = {"storage": args.storage, "runs": args.runs, "keep_days": args.keep_days}
    with scratch_instance(args.storage, args.server, start_key, args.keep) as scratch:
        os.environ.update(scratch.env())
        with DagsterInstance.from_config(str(scratch.home)) as instance:
            print(f"filling {args.storage} with {args.runs:,} runs (load {load()})", flush=True)
            result["fill"] = fill(instance, first_ms, args.runs, not args.no_checks)
            result["runs_before"] = micro_runs(instance)
            result["disk_before"], result["files_before"] = scratch.disk_bytes(), scratch.files()
            print(f"timing the UI's queries ({result['runs_before']:,} runs, load {load()})", flush=True)
            result["before"] = measure(scratch, args.port, args.repeat)
            before = datetime.now(UTC) - timedelta(days=args.keep_days)
            print(f"pruning runs created before {before:%Y-%m-%d %H:%M} (load {load()})", flush=True)
            result["prune"] = prune(scratch, instance, before, args.budget)
            result["runs_after"] = micro_runs(instance)
            result["disk_after"], result["files_after"] = scratch.disk_bytes(), scratch.files()
            print(f"timing the UI's queries again ({result['runs_after']:,} runs, load {load()})", flush=True)
            result["after"] = measure(scratch, args.port, args.repeat)
    print()
    print(table(result))
    path = args.json or ROOT / ".iot-etl" / "bench" / f"runs_ui_{args.storage}_{args.runs}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
