"""The systems under test: the product (`iot-etl up --no-simulator`) and the baseline writers.

Each starts against a private broker and its own database, says which processes are its own (roots of
process trees), how long its row count may stand still while messages are still on their way, and
stops everything it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

import psutil

from bench.e2e.baselines.common import TABLE
from bench.e2e.steps import RunSteps, run_steps
from iot_etl.children import REPO_ROOT
from iot_etl.launch import launch_up
from tests.support.mosquitto import PrivateMosquitto
from tests.support.ports import free_port
from tests.support.redis_server import PrivateRedis

BASELINE_STALL_S = 30.0
READY_TIMEOUT_S = 60.0
#: Topic the listener takes but the product does not decode (two segments): it lands in `rejected`,
#: never in `measurements`, so it tells that the listener is subscribed without adding a row.
PROBE_TOPIC = "devices/bench-probe"


class SystemUnderTest(Protocol):
    name: str
    table: str

    def start(self, broker: PrivateMosquitto, database_url: str) -> None: ...
    def roots(self) -> list[int]: ...
    def stall_s(self) -> float: ...
    def running(self) -> bool: ...
    def stop(self) -> None: ...
    def run_steps(self) -> list[RunSteps]: ...


@dataclass
class Product:
    """The pipeline as a user runs it, with a private Redis and Dagster home.

    `settings` are further IOT_* variables of the stack (they win over the defaults here); `home` is the
    Dagster home (a temporary folder when None); `log` receives the stack's output (its children's logs).
    `probe`: `start` returns once the listener has written a probe message to the stream (whose window
    then becomes a micro-batch run); without it, once `up` has announced the UI.

    The run workers' forkserver starts as the daemon starts here (IOT_RUN_WORKERS_START=daemon_start,
    not the product's default, which starts it with the first run), and `start` waits until it has
    imported its libraries: that is start-up, paid once, not a cost of the messages a trial measures.
    """

    window_s: int
    table: str = "measurements"
    settings: dict[str, str] = field(default_factory=dict)
    home: Path | None = None
    log: TextIO | None = None
    stream: str = "bench:raw"
    env: dict[str, str] = field(default_factory=dict)
    variant: str = ""
    probe: bool = True
    _up: subprocess.Popen | None = None
    _redis: PrivateRedis | None = None

    @property
    def name(self) -> str:
        return f"product-{self.window_s}s" + (f"-{self.variant}" if self.variant else "")

    def start(self, broker: PrivateMosquitto, database_url: str) -> None:
        self._redis = PrivateRedis().start()
        self.home = self.home or Path(tempfile.mkdtemp(prefix="bench-e2e-dagster-"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
        env.update(
            {
                **broker.env(),
                **self._redis.env(),
                "IOT_DATABASE_URL": database_url,
                "IOT_STREAM_PREFIX": self.stream,
                "IOT_DAGSTER_HOME": str(self.home),
                "IOT_LISTENER_CLIENT_ID": f"bench-listener-{os.getpid()}",
                "IOT_LISTENER_METRICS_PORT": "0",
                "IOT_WEBSERVER_PORT": str(free_port()),
                "IOT_WINDOW_SECONDS": str(self.window_s),
                "IOT_RUN_WORKERS_START": "daemon_start",
                **self.settings,
            }
        )
        self.env = env
        self._up, banner = launch_up(env, "--no-simulator", timeout_s=240, on_line=self._log_line)
        self._log_line(banner)
        if self.probe:
            self.wait_subscribed(broker)
        forking = env.get("IOT_DAGSTER_RUN_LAUNCHER", "forking") == "forking"
        if forking and env["IOT_RUN_WORKERS_START"] == "daemon_start":
            self._wait_forkserver_started()

    def wait_subscribed(self, broker: PrivateMosquitto) -> None:
        """Publish probe messages until the listener has written one to the stream."""
        assert self._redis is not None
        redis = self._redis.client()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not redis.xlen(self.stream):
            if time.monotonic() > deadline:
                raise TimeoutError("the listener did not subscribe within a minute")
            broker.publish_many([(PROBE_TOPIC, b"probe")])
            time.sleep(0.5)

    def _wait_forkserver_started(self) -> None:
        """Wait until the run workers' forkserver exists and its CPU time has stopped growing."""
        assert self._up is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = -1.0
        while time.monotonic() < deadline:
            try:
                servers = [
                    p
                    for p in psutil.Process(self._up.pid).children(recursive=True)
                    if "forkserver" in " ".join(p.cmdline())
                ]
                cpu = sum(sum(p.cpu_times()[:2]) for p in servers)
            except psutil.NoSuchProcess:  # a process ended while looked at: look again
                servers = []
            if servers:
                if cpu == last:
                    return
                last = cpu
            time.sleep(1.0)
        raise TimeoutError("the daemon's forkserver did not finish starting within a minute")

    def _log_line(self, text: str) -> None:
        if self.log is not None:
            self.log.write(text if text.endswith("\n") else text + "\n")
            self.log.flush()

    def roots(self) -> list[int]:
        assert self._up is not None and self._redis is not None
        return [self._up.pid, int(self._redis.client().info("server")["process_id"])]

    def redis(self) -> PrivateRedis:
        assert self._redis is not None
        return self._redis

    def stall_s(self) -> float:
        return 2 * self.window_s + 60.0

    def running(self) -> bool:
        """`iot-etl up` stops everything when one of its children exits."""
        return self._up is not None and self._up.poll() is None

    def run_steps(self) -> list[RunSteps]:
        """The trial's micro-batch runs with their step times, from the stopped stack's Dagster storage:
        the target is that no run takes longer than its window."""
        return run_steps(self.home) if self.home is not None else []

    def stop(self) -> None:
        if self._up is not None:
            os.killpg(self._up.pid, signal.SIGTERM)
            try:
                self._up.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self._up.pid, signal.SIGKILL)
                self._up.wait(10)
        if self._redis is not None:
            self._redis.close()


@dataclass
class Baseline:
    """One of the writers in bench.e2e.baselines, as its own process."""

    name: str
    module: str
    table: str = TABLE
    _process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, broker: PrivateMosquitto, database_url: str) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", self.module, broker.host, str(broker.port), database_url],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"{self.module} did not subscribe (said {line!r})")

    def roots(self) -> list[int]:
        assert self._process is not None
        return [self._process.pid]

    def stall_s(self) -> float:
        return BASELINE_STALL_S

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def run_steps(self) -> list[RunSteps]:
        return []  # no runs

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)


BASELINES = {
    "copy": "bench.e2e.baselines.copy_writer",
    "executemany": "bench.e2e.baselines.executemany_writer",
    "insert": "bench.e2e.baselines.insert_writer",
}


#: The product with one setting changed, to compare within one run (name -> IOT_* variables).
PRODUCT_VARIANTS = {
    # Dagster's own run launcher (a spawned interpreter per run) instead of the forking one
    "product-spawn": {"IOT_DAGSTER_RUN_LAUNCHER": "default"},
}


#: The product's settings for the simulator's fleet: its four F2 controllers send a third of the messages,
#: above a device's default limit (100 msg/s) at a few hundred msg/s, whose excess the listener would
#: acknowledge and not write. The benchmark measures every message.
FLEET_SETTINGS = {"IOT_DEVICE_MAX_MSGS_PER_S": "0"}


def system(name: str, window_s: int, fleet: bool = False) -> SystemUnderTest:
    """`product`, a product variant or a baseline's name -> a fresh system under test; `fleet`: it is sent
    the simulator's fleet (`FLEET_SETTINGS`)."""
    extra = FLEET_SETTINGS if fleet else {}
    if name == "product":
        return Product(window_s, settings=dict(extra))
    if name in PRODUCT_VARIANTS:
        settings = {**extra, **PRODUCT_VARIANTS[name]}
        return Product(window_s, settings=settings, variant=name.removeprefix("product-"))
    if name in BASELINES:
        return Baseline(name, BASELINES[name])
    choices = ", ".join(["product", *PRODUCT_VARIANTS, *BASELINES])
    raise ValueError(f"unknown system {name!r}: choose one of {choices}")
