"""Memory of the whole stack that `iot-etl up --no-simulator` starts, at rest and under load.

    .venv/bin/python -m bench.stack_memory [--idle 120] [--run-workers-start first_run|daemon_start]
        [--first-run] [--rate 5000 --duration 60] [--json out.json]

Starts `iot-etl up --no-simulator` as `bench.compare` does (a private Mosquitto, a private Redis, a
scratch database on the local PostgreSQL, a temporary Dagster home, `--window` s windows), sends nothing,
waits `--idle` seconds, then reads every process of `up`'s process tree: its RSS and its PSS and private
(USS) memory from `/proc/<pid>/smaps_rollup`. RSS counts a page shared between processes (a forked
child's inherited libraries, the shared libraries of every interpreter) in each of them; PSS divides it
among them, so the PSS sum is what the tree holds. The private Redis, the broker and PostgreSQL are not
`up`'s processes here and are not summed (with services `up` embeds, they would be).

The run workers' forkserver starts as `--run-workers-start` says (IOT_RUN_WORKERS_START; the product's
default, `first_run`, unless given). With `--first-run`, one message is then sent, and the seconds its
window's micro-batch run took from its creation (the sensor's request) to its worker's start and to its
end are reported, with the tree's memory after it. With `--rate`, the simulator's mix (`--kinds`, 5 %
bad) is published at that rate for `--duration` seconds by `bench.compare`'s publishers, and the peak of
each sum over samples every 0.5 s until `--drain` seconds later is reported too (with the device limit
lifted, as `bench.compare` lifts it for the fleet).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.e2e import databases
from bench.e2e.processes import classify
from bench.e2e.systems import FLEET_SETTINGS, Product
from iot_core.settings import Settings
from tests.support.mosquitto import PrivateMosquitto

MB = 1024 * 1024
SAMPLE_S = 0.5


@dataclass(frozen=True, slots=True)
class ProcessMemory:
    pid: int
    group: str
    command: str
    rss: int
    pss: int
    uss: int


def smaps_rollup(pid: int) -> dict[str, int]:
    """The kB fields of /proc/<pid>/smaps_rollup, in bytes."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[key] = int(parts[0]) * 1024
    return fields


def tree_memory(root: int) -> list[ProcessMemory]:
    """Every live process of `root`'s tree, root included."""
    found = []
    try:
        top = psutil.Process(root)
        processes = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    for process in processes:
        try:  # a process may end while it is read (a run worker, a forkserver's helper)
            command = " ".join(process.cmdline())
            fields = smaps_rollup(process.pid)
            group = "supervisor" if process.pid == root else classify(command)
            if "forkserver" in command:
                # a run worker is forked from the forkserver and keeps its command line
                parent = process.parent()
                forked = parent is not None and "forkserver" in " ".join(parent.cmdline())
                group = "run-worker" if forked else "run-forkserver"
        except (psutil.Error, FileNotFoundError, ProcessLookupError):
            continue
        uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
        found.append(ProcessMemory(process.pid, group, command, fields["Rss"], fields["Pss"], uss))
    return found


def report(processes: list[ProcessMemory]) -> str:
    lines = [f"{'process':<22} {'pid':>7} {'RSS MB':>8} {'PSS MB':>8} {'USS MB':>8}"]
    for p in sorted(processes, key=lambda p: -p.rss):
        lines.append(f"{p.group:<22} {p.pid:>7} {p.rss / MB:>8.1f} {p.pss / MB:>8.1f} {p.uss / MB:>8.1f}")
    rss, pss, uss = (sum(getattr(p, k) for p in processes) / MB for k in ("rss", "pss", "uss"))
    lines.append(f"{f'sum of {len(processes)}':<22} {'':>7} {rss:>8.1f} {pss:>8.1f} {uss:>8.1f}")
    return "\n".join(lines)


@dataclass(eq=False)
class PeakSampler(threading.Thread):
    """The highest RSS and PSS sums of `root`'s tree, sampled every SAMPLE_S until stop()."""

    root: int
    peak_rss: int = 0
    peak_pss: int = 0
    #: per group, the highest PSS sum of its processes at one sample
    peak_pss_groups: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            processes = tree_memory(self.root)
            self.peak_rss = max(self.peak_rss, sum(p.rss for p in processes))
            self.peak_pss = max(self.peak_pss, sum(p.pss for p in processes))
            groups: dict[str, int] = defaultdict(int)
            for p in processes:
                groups[p.group] += p.pss
            for group, pss in groups.items():
                self.peak_pss_groups[group] = max(self.peak_pss_groups[group], pss)
            self._halt.wait(SAMPLE_S)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def publish_mix(host: str, port: int, rate: float, duration: float, kinds: str) -> str:
    """The end-to-end benchmark's publishers (`bench.e2e.publishers`, four processes) at `rate` msg/s for
    `duration` s against the private broker; what they sent."""
    from bench.e2e.messages import BAD_SHARE
    from bench.e2e.publishers import publish

    sent = publish(host, port, int(rate * duration), 4, rate, tuple(kinds.split(",")), BAD_SHARE)
    return f"{sent.acked:,} acknowledged at {sent.rate:,.0f} msg/s"


def first_run(product: Product, broker: PrivateMosquitto, timeout_s: float = 300.0) -> dict[str, float]:
    """Send one message (the listener's probe) and wait for the first micro-batch run to finish: the
    seconds from the run's creation to its worker's start (queue, launch, and with a lazy forkserver its
    imports) and to its end, read from the stack's Dagster storage."""
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    assert product.home is not None
    product.wait_subscribed(broker)
    finished = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE]
    deadline = time.monotonic() + timeout_s
    with DagsterInstance.from_config(str(product.home)) as instance:
        while time.monotonic() < deadline:
            runs = instance.get_run_records(
                RunsFilter(job_name="micro_batch_job", statuses=finished), limit=1, ascending=True
            )
            if runs and runs[0].start_time and runs[0].end_time:
                run = runs[0]
                created = run.create_timestamp.timestamp()
                return {
                    "created_to_started_s": round(run.start_time - created, 2),
                    "created_to_ended_s": round(run.end_time - created, 2),
                    "succeeded": float(run.dagster_run.status == DagsterRunStatus.SUCCESS),
                }
            time.sleep(0.5)
    raise TimeoutError(f"no micro-batch run finished within {timeout_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=120.0, help="seconds at rest before reading")
    parser.add_argument("--rate", type=float, default=0.0, help="then publish at this rate (0: do not)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of publishing")
    parser.add_argument("--kinds", default="plain,event,f2", help="the simulator's --kinds")
    parser.add_argument("--drain", type=float, default=90.0, help="seconds sampled after publishing")
    parser.add_argument("--window", type=int, default=10, help="IOT_WINDOW_SECONDS of the stack")
    parser.add_argument(
        "--run-workers-start",
        choices=["first_run", "daemon_start"],
        default=Settings.model_fields["run_workers_start"].default,
        help="IOT_RUN_WORKERS_START of the stack (default: the product's)",
    )
    parser.add_argument("--first-run", action="store_true", help="then send one message, time its run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    settings = Settings()
    name = f"bench_stackmem_{uuid.uuid4().hex[:8]}"
    databases.create_database(settings, name)
    result: dict = {"load_avg_start": os.getloadavg(), "run_workers_start": args.run_workers_start}
    try:
        with PrivateMosquitto() as broker:
            stream = f"bench-stackmem-{name[-8:]}"
            stack = {**FLEET_SETTINGS, "IOT_RUN_WORKERS_START": args.run_workers_start}
            product = Product(args.window, settings=stack, stream=stream, probe=False)
            try:
                product.start(broker, databases.database_url(settings, name))
                assert product._up is not None
                root = product._up.pid
                time.sleep(args.idle)
                idle = tree_memory(root)
                print(
                    f"at rest after {args.idle:.0f} s, IOT_RUN_WORKERS_START={args.run_workers_start} "
                    f"(load average {os.getloadavg()}):"
                )
                print(report(idle))
                result["idle"] = [vars_of(p) for p in idle]
                if args.first_run:
                    result["first_run"] = first_run(product, broker)
                    after = tree_memory(root)
                    print(f"\nthe first run: {result['first_run']} (load average {os.getloadavg()})")
                    print(report(after))
                    result["after_first_run"] = [vars_of(p) for p in after]
                elif args.rate:
                    product.wait_subscribed(broker)  # the listener takes messages
                if args.rate:
                    sampler = PeakSampler(root)
                    sampler.start()
                    sent = publish_mix(broker.host, broker.port, args.rate, args.duration, args.kinds)
                    time.sleep(args.drain)
                    sampler.stop()
                    busy = tree_memory(root)
                    print(f"\nafter {args.rate:,.0f} msg/s for {args.duration:.0f} s ({args.kinds}): {sent}")
                    print(report(busy))
                    print(
                        f"peak sums over the run: RSS {sampler.peak_rss / MB:,.0f} MB, "
                        f"PSS {sampler.peak_pss / MB:,.0f} MB (load average {os.getloadavg()})"
                    )
                    groups = sorted(sampler.peak_pss_groups.items(), key=lambda g: -g[1])
                    print("peak PSS per group: " + ", ".join(f"{g} {v / MB:,.0f}" for g, v in groups))
                    result.update(peak_rss_mb=sampler.peak_rss / MB, peak_pss_mb=sampler.peak_pss / MB)
            finally:
                product.stop()
                if product.home is not None:
                    shutil.rmtree(product.home, ignore_errors=True)
    finally:
        databases.drop_database(settings, name)
    result["load_avg_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")


def vars_of(p: ProcessMemory) -> dict:
    return {
        "pid": p.pid,
        "group": p.group,
        "command": p.command[:200],
        **{"rss": p.rss, "pss": p.pss, "uss": p.uss},
    }


if __name__ == "__main__":
    main()
