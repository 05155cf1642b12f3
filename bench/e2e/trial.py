"""One trial: one system, one mode (burst or sustained), on a fresh broker and database."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench.e2e import databases
from bench.e2e.messages import BAD_SHARE, MIX, PLAIN
from bench.e2e.observer import RowCounter, count_messages, count_rows, latencies
from bench.e2e.processes import NOT_PIPELINE, ProcessSampler
from bench.e2e.publishers import publish
from bench.e2e.systems import PROBE_TOPIC, SystemUnderTest
from iot_core.settings import Settings
from tests.support.mosquitto import PrivateMosquitto

MB = 1024 * 1024
#: Groups whose memory is not the system's own: the shared broker, and PostgreSQL backends, whose RSS
#: is mostly the server's shared buffers.
NOT_SYSTEM_MEMORY = NOT_PIPELINE | {"postgres"}


class SystemStoppedError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Load:
    """What to publish: `messages` in all, at `rate` msg/s (sustained) or all at once (burst, rate None),
    of the simulator's fleet of `kinds` (`bad_share` of them bad) or, for `PLAIN`, plain messages that
    the baseline writers store too (`bench.e2e.messages`)."""

    mode: str
    messages: int
    rate: float | None
    publishers: int
    kinds: tuple[str, ...] = MIX
    bad_share: float = BAD_SHARE

    @property
    def fleet(self) -> bool:
        return self.kinds != PLAIN


def run_trial(settings: Settings, system: SystemUnderTest, load: Load, repetition: int) -> dict[str, Any]:
    name = f"bench_e2e_{uuid.uuid4().hex[:8]}_{system.name.replace('-', '_')}"
    url = databases.database_url(settings, name)
    databases.create_database(settings, name)
    try:
        with PrivateMosquitto() as broker:
            system.start(broker, url)
            try:
                query = count_messages(PROBE_TOPIC) if load.fleet else count_rows(system.table)
                counter = RowCounter(url, query, target=load.messages, stall_s=system.stall_s())
                sampler = ProcessSampler(
                    roots=[*system.roots(), broker.pid or 0],
                    database=name,
                    postmaster_pid=databases.postmaster_pid(settings),
                    exclude_pids={counter.backend_pid},
                )
                sampler.start()
                counter.start()
                sent = publish(
                    broker.host,
                    broker.port,
                    load.messages,
                    load.publishers,
                    load.rate,
                    load.kinds,
                    load.bad_share,
                )
                counter.join()
                sampler.stop()
                if not system.running():
                    raise SystemStoppedError(
                        f"{system.name} stopped during the trial: its numbers would be wrong"
                    )
            finally:
                system.stop()
    finally:
        databases.drop_database(settings, name)
    result = summarize(system.name, load, repetition, sent, counter, sampler)
    runs = system.run_steps()
    result["longest_run_s"] = max((run.seconds for run in runs), default=None)
    # each step's longest time over the trial's runs: where a window's run spends it
    result["step_max_s"] = {
        step: round(max(run.steps.get(step, 0.0) for run in runs), 1)
        for step in sorted({step for run in runs for step in run.steps})
    }
    # every run, oldest first: which window was slow, and the one that closed an hour (JSON only)
    result["runs"] = [
        {"window": run.label, "seconds": run.seconds, "steps": {k: round(v, 1) for k, v in run.steps.items()}}
        for run in runs
    ]
    return result


def summarize(
    system: str, load: Load, repetition: int, sent: Any, counter: RowCounter, sampler: ProcessSampler
) -> dict[str, Any]:
    stored = counter.stored
    elapsed = counter.last_row_at - sent.first_publish if stored else float("nan")
    lat = latencies(sent.publish_times, counter.timeline)
    cpu = sampler.cpu_seconds()
    per_100k = 100_000 / max(load.messages, 1)
    pipeline_cpu = sum(v for g, v in cpu.items() if g not in NOT_PIPELINE)
    return {
        "system": system,
        "mode": load.mode,
        "kinds": ",".join(load.kinds),
        "bad_share": load.bad_share if load.fleet else 0.0,
        "repetition": repetition,
        "messages": load.messages,
        "target_rate": load.rate,
        "publishers": load.publishers,
        "publish_rate": round(sent.rate, 1),
        "acked": sent.acked,
        "stored": stored,
        "lost": sent.published - stored,
        "rows_per_s": round(stored / elapsed, 1) if stored else 0.0,
        "seconds_first_publish_to_last_row": round(elapsed, 3),
        "latency_p50_s": round(lat.p50, 3) if lat else None,
        "latency_p95_s": round(lat.p95, 3) if lat else None,
        "latency_p99_s": round(lat.p99, 3) if lat else None,
        "latency_max_s": round(lat.max, 3) if lat else None,
        "cpu_s_per_100k_pipeline": round(pipeline_cpu * per_100k, 2),
        "cpu_s_per_100k": {g: round(v * per_100k, 2) for g, v in sorted(cpu.items())},
        "peak_rss_mb_system": round(
            sum(v for g, v in sampler.peak_rss.items() if g not in NOT_SYSTEM_MEMORY) / MB, 1
        ),
        "peak_rss_mb": {g: round(v / MB, 1) for g, v in sorted(sampler.peak_rss.items())},
        # the machine's load while the trial ran: other work on a shared machine shows up here
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
