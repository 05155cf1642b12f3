"""CPU seconds and peak RSS per process group of a system under test, sampled with psutil.

Groups are told apart by command line: the product's listener, Dagster daemon, webserver, code servers
and run workers (with their helper processes), the baseline writers, the system's own PostgreSQL
backends (those connected to its database, except the benchmark's own poller), Redis and the broker.
A process that exits between two samples keeps the CPU time of its last sample, so short-lived run
workers lose at most one interval.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field

import psutil

SAMPLE_INTERVAL_S = 0.2
#: Groups that are not part of the system under test (every system gets the same broker).
NOT_PIPELINE = frozenset({"broker"})


def classify(cmdline: str) -> str:
    """The group of a process, from its command line."""
    rules = (
        # first: a code server's command line carries the instance's configuration, which names
        # compute logs
        ("api grpc", "code-server"),
        ("code-server", "code-server"),
        ("ingest_listener", "listener"),
        # a run worker is a multiprocessing child of the code server, with its helpers (orphan watcher,
        # compute-log tails, multiprocessing resource tracker)
        ("multiprocessing", "run-workers"),
        ("watch_orphans", "run-workers"),
        ("compute_logs", "run-workers"),
        ("execute_run", "run-workers"),
        ("dagster-daemon", "dagster-daemon"),
        ("dagster-webserver", "dagster-webserver"),
        ("iot_etl.cli", "supervisor"),
        ("bench.e2e.baselines", "writer"),
        ("redis-server", "redis"),
        ("mosquitto", "broker"),
    )
    for needle, group in rules:
        if needle in cmdline:
            return group
    if cmdline.startswith("postgres"):
        return "postgres"
    return "other"


@dataclass(eq=False)
class _Tracked:
    group: str
    process: psutil.Process
    cpu_start: float
    cpu_last: float


@dataclass(eq=False)
class ProcessSampler(threading.Thread):
    """Samples the process trees under `roots` and the PostgreSQL backends of `database` until stop()."""

    roots: list[int]
    database: str
    postmaster_pid: int
    exclude_pids: set[int] = field(default_factory=set)
    peak_rss: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)
        self._halt = threading.Event()
        self._tracked: dict[tuple[int, float], _Tracked] = {}
        self._first = True
        self._postmaster = psutil.Process(self.postmaster_pid)

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(SAMPLE_INTERVAL_S)
        self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def _processes(self) -> list[psutil.Process]:
        found: list[psutil.Process] = []
        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                found += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        try:
            backends = self._postmaster.children()
        except psutil.NoSuchProcess:
            backends = []
        for backend in backends:
            if backend.pid in self.exclude_pids:
                continue
            try:
                if f" {self.database} " in " ".join(backend.cmdline()) + " ":
                    found.append(backend)
            except psutil.Error:
                continue
        return found

    def sample(self) -> None:
        rss: dict[str, int] = defaultdict(int)
        for process in self._processes():
            try:
                with process.oneshot():
                    key = (process.pid, process.create_time())
                    tracked = self._tracked.get(key)
                    times = process.cpu_times()
                    cpu = times.user + times.system
                    if tracked is None:
                        group = classify(" ".join(process.cmdline()))
                        # processes alive at the first sample count from there, later ones from birth
                        tracked = _Tracked(group, process, cpu if self._first else 0.0, cpu)
                        self._tracked[key] = tracked
                    tracked.cpu_last = cpu
                    rss[tracked.group] += process.memory_info().rss
            except psutil.Error:
                continue
        self._first = False
        for group, value in rss.items():
            self.peak_rss[group] = max(self.peak_rss[group], value)

    def cpu_seconds(self) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for tracked in self._tracked.values():
            totals[tracked.group] += tracked.cpu_last - tracked.cpu_start
        return dict(totals)
