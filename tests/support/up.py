"""`iot-etl up` the way tests run it: an environment of its own (database, stream prefix, listener client
id, Dagster home, UI port), run to its end or started and stopped as a user would (SIGTERM is Ctrl-C).

The environment is the test session's less every `IOT_*` variable, so that `up` reads only what the test
sets; its database and stream keys are removed afterwards."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt

from tests.support.database import database_url, drop_database
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
WINDOW_S = 10
_STARTED = re.compile(r"^started \S+ \(pid (\d+)\)$", re.M)


def base_env(dagster_home: Path, **values: str) -> dict[str, str]:
    """The session's environment without `IOT_*`, plus what every private `up` needs: its own listener
    client id and Dagster home, a free UI port, no metrics port, 10 s windows closed 0.5 s after their end;
    `values` (IOT_* names) on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
    env.update(
        {
            "IOT_LISTENER_CLIENT_ID": f"listener-{uuid.uuid4().hex[:8]}",
            "IOT_LISTENER_METRICS_PORT": "0",
            "IOT_DAGSTER_HOME": str(dagster_home),
            "IOT_WEBSERVER_PORT": str(free_port()),
            "IOT_WINDOW_SECONDS": str(WINDOW_S),
            "IOT_WINDOW_GRACE_MS": "500",
            **values,
        }
    )
    return env


@contextmanager
def private_up_env(workdir: Path, prefix: str = "iot_up") -> Iterator[dict[str, str]]:
    """`base_env` with a database and stream prefix of its own on the test services, removed at the end
    (the stream keys from the Redis the environment names, which a test may have changed)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    env = base_env(
        workdir / "dagster_home",
        IOT_DATABASE_URL=database_url(name),
        IOT_STREAM_PREFIX=f"test:{name}:raw",
    )
    try:
        yield env
    finally:
        drop_database(name)
        import redis

        client = redis.Redis.from_url(env.get("IOT_REDIS_URL", "redis://127.0.0.1:6379/0"))
        try:
            for key in client.scan_iter(f"test:{name}:*"):
                client.delete(key)
        except redis.ConnectionError:
            pass  # a private Redis the test has stopped already
        finally:
            client.close()


def path_without_mosquitto() -> str:
    """PATH less every folder that holds a `mosquitto`: a machine without Mosquitto, as `up` sees it."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(f for f in folders if f and not (Path(f) / "mosquitto").exists())


def run_up(env: dict[str, str], *args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    """`iot-etl up ARGS` (`--no-simulator` unless ARGS are given) to its end, output captured; a refusal
    takes Python start-up and imports only, which alone took 40 s at a load average of 50."""
    return subprocess.run(
        [sys.executable, "-m", "iot_etl.cli", "up", *(args or ("--no-simulator",))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def stop_up(up: subprocess.Popen, timeout_s: float = 60) -> int:
    """SIGTERM as Ctrl-C would; the exit status of `up` (its group is killed if it does not stop)."""
    up.send_signal(signal.SIGTERM)
    try:
        return up.wait(timeout_s)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)


def started_pids(output: str) -> set[int]:
    """The pids of `started NAME (pid N)` lines: each leads a process group of its own."""
    return {int(pid) for pid in _STARTED.findall(output)}


def stored_event(device: str, **fields: object) -> dict[str, object]:
    """An event of `device` the pipeline stores (and acknowledges with status `stored`)."""
    return {
        "schema": 1,
        "event_id": f"{device}-1",
        "device_id": device,
        "event_type": "temperature",
        "value": 23.5,
        "unit": "C",
        "ts_device": "2024-02-10T00:00:00Z",
        **fields,
    }


def publish(port: int, messages: list[tuple[str, str]]) -> None:
    """(topic, payload) pairs to the broker on 127.0.0.1:`port` at QoS 1, each acknowledged."""
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"test-pub-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5,
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()
