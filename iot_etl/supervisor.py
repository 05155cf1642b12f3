"""`iot-etl up`: start every process of the pipeline, watch them, stop them all within seconds."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from iot_core.settings import Settings
from iot_etl.broker import BrokerNotInstalledError, broker_argv
from iot_etl.dagster_instance import write_instance_config

REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 8.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None


@dataclass
class Supervisor:
    """Children run in their own process groups so that a stop reaches their children too (run workers)."""

    settings: Settings
    children: list[Child] = field(default_factory=list)
    stopping: bool = False

    def env(self, dagster_home: Path) -> dict[str, str]:
        env = dict(os.environ)
        env["DAGSTER_HOME"] = str(dagster_home)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, with_simulator: bool, with_broker: bool = False) -> None:
        home = write_instance_config(self.settings)
        bin_dir = Path(sys.executable).parent
        workspace = str(REPO_ROOT / "workspace.yaml")
        if with_broker:
            # the project's broker first, so the listener finds it (it would retry anyway)
            if port_accepts(self.settings.mqtt_host, self.settings.mqtt_port):
                raise BrokerPortInUseError(
                    f"{self.settings.mqtt_host}:{self.settings.mqtt_port} is already in use (another "
                    "broker?); set IOT_MQTT_PORT to a free port for --with-broker"
                )
            argv = broker_argv(self.settings, home.parent / "broker")
            self._spawn(Child("broker", argv), self.env(home))
            wait_for_port(self.settings.mqtt_host, self.settings.mqtt_port, timeout_s=10)
        self.children += [
            Child("listener", [sys.executable, "-m", "ingest_listener"]),
            Child("dagster-daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", workspace]),
            Child(
                "dagster-webserver",
                [
                    str(bin_dir / "dagster-webserver"),
                    "-w",
                    workspace,
                    "-h",
                    self.settings.webserver_host,
                    "-p",
                    str(self.settings.webserver_port),
                ],
            ),
        ]
        if with_simulator:
            self.children.append(Child("simulator", [sys.executable, "-m", "simulator"]))
        env = self.env(home)
        for child in self.children:
            if child.process is None:
                self._spawn(child, env)

    def _spawn(self, child: Child, env: dict[str, str]) -> None:
        child.process = subprocess.Popen(child.argv, cwd=REPO_ROOT, env=env, start_new_session=True)
        if child not in self.children:
            self.children.append(child)
        print(f"started {child.name} (pid {child.process.pid})", flush=True)

    @property
    def ui_url(self) -> str:
        return f"http://{self.settings.webserver_host}:{self.settings.webserver_port}"

    def wait_for_ui(self, timeout_s: float = 90.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stopping:
            try:
                with urllib.request.urlopen(f"{self.ui_url}/server_info", timeout=2):
                    return True
            except OSError:
                time.sleep(0.5)
            if self.exited():
                return False
        return False

    def exited(self) -> list[Child]:
        return [c for c in self.children if c.process is not None and c.process.poll() is not None]

    def stop(self) -> None:
        self.stopping = True
        for child in self.children:
            if child.process and child.process.poll() is None:
                _signal_group(child.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in self.children:
            if not child.process:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{child.name} did not stop in {STOP_TIMEOUT_S:.0f} s: killing it", flush=True)
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait(5)
            # whatever the child left in its group (run workers, code servers) goes too
            _signal_group(child.process, signal.SIGKILL)
        for child in self.children:
            if child.process:
                _wait_group_gone(child.process.pid, timeout_s=3.0)


class BrokerPortInUseError(RuntimeError):
    pass


def port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_accepts(host, port):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing accepts connections on {host}:{port} after {timeout_s:.0f} s")


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    """SIGKILL is asynchronous: return once no process of the group is left (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def run_up(settings: Settings, with_simulator: bool, with_broker: bool = False) -> int:
    """Start everything, print the UI address, and stop it all on Ctrl-C/SIGTERM or when a child dies."""
    supervisor = Supervisor(settings)

    def on_signal(signum: int, _frame: object) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    status = 0
    try:
        try:
            supervisor.start(with_simulator, with_broker)
        except (BrokerPortInUseError, BrokerNotInstalledError, TimeoutError) as exc:
            print(f"cannot start: {exc}", file=sys.stderr, flush=True)
            return 2
        if supervisor.wait_for_ui():
            print(f"\nDagster UI: {supervisor.ui_url}  (Ctrl-C stops everything)\n", flush=True)
        elif not supervisor.stopping:
            print("the Dagster webserver did not come up; stopping", file=sys.stderr, flush=True)
            status = 1
            supervisor.stopping = True
        while not supervisor.stopping:
            dead = supervisor.exited()
            if dead:
                for child in dead:
                    print(
                        f"{child.name} exited with {child.process.returncode}; stopping everything",
                        file=sys.stderr,
                        flush=True,
                    )
                status = 1
                break
            time.sleep(0.5)
    finally:
        print("stopping...", flush=True)
        supervisor.stop()
        print("stopped", flush=True)
    return status


def launch_up(env: Mapping[str, str], *args: str, timeout_s: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Start `iot-etl up ARGS` in its own process group, as a user would, and return it once it printed the
    UI address, with everything it printed until then (benchmarks and tests drive whole stacks with it).
    Its later output is drained in the background so that it never blocks on a full pipe."""
    process = subprocess.Popen(
        [sys.executable, "-m", "iot_etl.cli", "up", *args],
        cwd=REPO_ROOT,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    banner = ""
    deadline = time.monotonic() + timeout_s
    while "Dagster UI: http://" not in banner:
        line = process.stdout.readline()
        if not line or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            raise RuntimeError(f"iot-etl up did not bring the UI up:\n{banner}")
        banner += line
    threading.Thread(target=process.stdout.read, daemon=True).start()
    return process, banner
