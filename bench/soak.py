"""Soak: the whole stack (`iot-etl up`) under the simulator for an hour, sampled every 30 s.

    .venv/bin/python -m bench.soak --minutes 60 --rate 200 --window-seconds 10 \\
        --compaction-cron '*/5 * * * *' --instance-storage sqlite|postgres [--out DIR]

It starts a private Mosquitto with the project's configuration, a private Redis, a telemetry database of
its own on the local PostgreSQL (and, with `--instance-storage postgres`, one for Dagster's storage), a
Dagster home under --out, then `iot-etl up --no-simulator` and the simulator (`python -m simulator`,
all three formats) at --rate msg/s for --minutes. Every 30 s it samples Redis memory and stream length,
Dagster's runs (all, failed), the tables' row counts, RSS per process group and the storage errors in the
stack's log (`bench.endurance`). When the simulator is done, it waits until the archive holds every
message the broker acknowledged (or stops growing), stops the stack and reports: lost = acknowledged -
archived; Redis memory from the first compaction to the end; run count, its maximum and whether pruning
lowered it; failed runs; storage errors. Output in --out: soak.json (rewritten at every sample, so a
run cut short still has its numbers), stack.log, simulator.log.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.e2e import databases
from bench.e2e.systems import Product
from bench.endurance.logscan import LogScanner
from bench.endurance.sample import Sampler
from bench.endurance.summary import summarize, table
from iot_core.settings import Settings
from iot_core.streams import stream_names
from iot_etl.children import REPO_ROOT
from tests.support.mosquitto import PrivateMosquitto

SAMPLE_EVERY_S = 30.0
STREAM_PREFIX = "soak:raw"
DRAIN_TIMEOUT_S = 900.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="how long the simulator publishes")
    parser.add_argument("--rate", type=float, default=200.0, help="simulator messages per second")
    parser.add_argument("--window-seconds", type=int, default=10, help="IOT_WINDOW_SECONDS")
    parser.add_argument("--compaction-cron", default="*/5 * * * *", help="IOT_COMPACTION_CRON")
    parser.add_argument("--instance-storage", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--trim-margin-s", type=int, default=300, help="IOT_STREAM_TRIM_MARGIN_S (default 1 h is the soak)"
    )
    parser.add_argument(
        "--run-retention-minutes", type=float, default=10.0, help="IOT_DAGSTER_RUN_RETENTION_DAYS, in minutes"
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default soak-STORAGE)")
    parser.add_argument("--keep-databases", action="store_true", help="do not drop the databases at the end")
    return parser.parse_args(argv)


def stack_settings(args: argparse.Namespace, dagster_pg_url: str | None) -> dict[str, str]:
    settings = {
        "IOT_COMPACTION_CRON": args.compaction_cron,
        "IOT_STREAM_TRIM_MARGIN_S": str(args.trim_margin_s),
        "IOT_DAGSTER_RUN_RETENTION_DAYS": repr(args.run_retention_minutes / 1440),
    }
    if dagster_pg_url:
        settings["IOT_DAGSTER_PG_URL"] = dagster_pg_url
    return settings


def acked_count(simulator_output: str) -> int:
    """The messages the broker acknowledged (PUBACK), from the simulator's report."""
    found = re.search(r"broker acknowledged (\d+)", simulator_output)
    if found is None:
        raise RuntimeError(f"the simulator printed no report:\n{simulator_output[-2000:]}")
    return int(found.group(1))


def write(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")


def take_sample(sampler: Sampler, document: dict[str, Any], out: Path, due: float) -> float:
    """Take a sample if it is due (time.monotonic), print its line, rewrite the JSON; the next due time.
    A sample that fails (a service too slow to answer) is recorded as an error, never stops the soak."""
    if time.monotonic() < due:
        return due
    try:
        document["samples"].append(sampler.take().as_dict())
        print(table(document["samples"][-1:], every_s=0).splitlines()[-1], flush=True)
    except Exception as exc:  # the soak goes on; the JSON says what failed when
        document.setdefault("sample_errors", []).append(f"{time.strftime('%H:%M:%S')} {exc!r}"[:500])
    write(out / "soak.json", document)
    return max(due, time.monotonic() - SAMPLE_EVERY_S) + SAMPLE_EVERY_S


def soak(args: argparse.Namespace, out: Path, url: str, dagster_pg_url: str | None) -> dict[str, Any]:
    """Run the stack and the simulator, sample until the archive is drained; the JSON document."""
    document: dict[str, Any] = {
        "arguments": {k: str(v) for k, v in vars(args).items()},
        "status": "starting",
        "samples": [],
    }
    with PrivateMosquitto() as broker, (out / "stack.log").open("a", encoding="utf-8") as log:
        product = Product(
            args.window_seconds,
            settings=stack_settings(args, dagster_pg_url),
            home=out / "dagster_home",
            log=log,
            stream=STREAM_PREFIX,
        )
        product.start(broker, url)
        try:
            sampler = Sampler(
                redis_client=product.redis().client(),
                streams=stream_names(STREAM_PREFIX, 1),
                database_url=url,
                dagster_home=out / "dagster_home",
                roots=product.roots(),
                log=LogScanner((out / "stack.log", out / "logs")),  # logs: up's per-process logs
            )
            with (out / "simulator.log").open("w", encoding="utf-8") as sim_log:
                simulator = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "simulator",
                        "--rate",
                        str(args.rate),
                        "--duration",
                        str(args.minutes * 60),
                    ],
                    cwd=REPO_ROOT,
                    env=product.env,
                    stdout=sim_log,
                    stderr=subprocess.STDOUT,
                )
                document["status"] = "publishing"
                next_at = time.monotonic()
                while simulator.poll() is None and product.running():
                    next_at = take_sample(sampler, document, out, next_at)
                    time.sleep(1.0)
                if not product.running():
                    simulator.terminate()
                    simulator.wait(30)
                    document["status"] = "the stack stopped during the soak"
            acked = acked_count((out / "simulator.log").read_text(encoding="utf-8"))
            document["status"] = "draining" if product.running() else document["status"]
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            stall_s = 2 * args.window_seconds + 120.0
            last, last_change = -1, time.monotonic()
            while time.monotonic() < deadline and product.running():
                archived = sampler.archived()
                if archived >= acked or time.monotonic() - last_change > stall_s:
                    break
                if archived != last:
                    last, last_change = archived, time.monotonic()
                next_at = take_sample(sampler, document, out, next_at)
                time.sleep(5.0)
            take_sample(sampler, document, out, 0.0)
            archived = sampler.archived()
        finally:
            product.stop()
    document["status"] = "done" if document["status"] == "draining" else document["status"]
    document["summary"] = summarize(document["samples"], acked, archived)
    document["storage_error_examples"] = sampler.log.examples
    return document


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = (args.out or Path(f"soak-{args.instance_storage}")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    name = f"soak_{args.instance_storage}_{uuid.uuid4().hex[:8]}"
    created = [name]
    databases.create_database(settings, name)
    dagster_pg_url = None
    if args.instance_storage == "postgres":
        created.append(f"{name}_dagster")
        databases.create_database(settings, created[-1])
        dagster_pg_url = databases.database_url(settings, created[-1])
    try:
        document = soak(args, out, databases.database_url(settings, name), dagster_pg_url)
    finally:
        if not args.keep_databases:
            for database in created:
                databases.drop_database(settings, database)
    write(out / "soak.json", document)
    print(table(document["samples"]))
    print(json.dumps(document["summary"], indent=2))
    print(f"\nJSON: {out / 'soak.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
