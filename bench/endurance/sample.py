"""One sample of a running stack: Redis memory and stream lengths, Dagster's runs, the telemetry tables,
the compactions so far, RSS per process group, storage errors in the log and the machine's load."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis

from bench.e2e.processes import classify
from bench.e2e.systems import PROBE_TOPIC
from bench.endurance.logscan import LogScanner

MB = 1024 * 1024


@dataclass(slots=True)
class Sample:
    elapsed_s: float
    at: str
    redis_used_memory: int
    stream_lengths: dict[str, int]
    runs: int
    micro_runs: int
    runs_failed_seen: int  # distinct failed runs seen in any sample so far (pruning deletes failed runs too)
    raw_messages: int
    measurements: int
    events: int
    rejected: int
    compactions: int
    stream_entries_trimmed: int
    runs_deleted: int
    rss_mb: dict[str, float]
    storage_error_lines: int
    storage_errors: dict[str, int]
    load_avg_1m: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(eq=False)
class Sampler:
    """Samples one stack; remembers failed runs across samples (pruning deletes them later)."""

    redis_client: redis.Redis
    streams: list[str]
    database_url: str
    dagster_home: Path
    roots: list[int]
    log: LogScanner
    started: float = field(default_factory=time.time)
    failed_runs: set[str] = field(default_factory=set)

    def take(self) -> Sample:
        counts = self.table_counts()
        runs, micro = self.run_counts()
        self.log.scan()
        return Sample(
            elapsed_s=round(time.time() - self.started, 1),
            at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            redis_used_memory=int(self.redis_client.info("memory")["used_memory"]),
            stream_lengths={s: int(self.redis_client.xlen(s)) for s in self.streams},
            runs=runs,
            micro_runs=micro,
            runs_failed_seen=len(self.failed_runs),
            raw_messages=counts["raw_messages"],
            measurements=counts["measurements"],
            events=counts["events"],
            rejected=counts["rejected"],
            compactions=counts["compactions"],
            stream_entries_trimmed=counts["trimmed"],
            runs_deleted=counts["runs_deleted"],
            rss_mb=self.rss_mb(),
            storage_error_lines=self.log.lines,
            storage_errors=dict(self.log.counts),
            load_avg_1m=round(os.getloadavg()[0], 2),
        )

    def table_counts(self) -> dict[str, int]:
        with psycopg.connect(self.database_url, connect_timeout=10) as conn:
            row = conn.execute(
                # the probe that told the harness the listener was subscribed is not the simulator's
                """SELECT (SELECT count(*) FROM raw_messages WHERE topic <> %s),
                          (SELECT count(*) FROM measurements), (SELECT count(*) FROM events),
                          (SELECT count(*) FROM rejected), (SELECT count(*) FROM compactions),
                          (SELECT coalesce(sum(stream_entries_trimmed), 0) FROM compactions),
                          (SELECT coalesce(sum(runs_deleted), 0) FROM compactions)""",
                (PROBE_TOPIC,),
            ).fetchone()
        assert row is not None
        keys = (
            "raw_messages",
            "measurements",
            "events",
            "rejected",
            "compactions",
            "trimmed",
            "runs_deleted",
        )
        return {k: int(v) for k, v in zip(keys, row, strict=True)}

    def archived(self) -> int:
        return self.table_counts()["raw_messages"]

    def run_counts(self) -> tuple[int, int]:
        """(all runs, micro-batch runs) in the instance; failed ones are remembered."""
        from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

        with DagsterInstance.from_config(str(self.dagster_home)) as instance:
            total = instance.get_runs_count()
            micro = instance.get_runs_count(RunsFilter(tags={"iot/kind": "micro"}))
            failed = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
        self.failed_runs.update(r.dagster_run.run_id for r in failed)
        return total, micro

    def rss_mb(self) -> dict[str, float]:
        """RSS per process group (listener, dagster-daemon, webserver, code servers, run workers, ...)."""
        rss: dict[str, int] = {}
        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for process in processes:
                try:
                    group = classify(" ".join(process.cmdline()))
                    rss[group] = rss.get(group, 0) + process.memory_info().rss
                except psutil.Error:
                    continue
        return {group: round(value / MB, 1) for group, value in sorted(rss.items())}
