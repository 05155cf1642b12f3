"""`iot-etl up` as a user runs it: a message from mosquitto_pub (not our code) becomes queryable, events are
acknowledged over MQTT, invalid ones dead-lettered, and Ctrl-C/SIGTERM stops everything within seconds.
A fresh Dagster home loads its code location every time, even under CPU load; a SIGKILLed `up` takes every
process it started with it (run workers too); one `up` per Dagster home; Dagster's PostgreSQL storage runs
micro-batches."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest

from iot_etl.launch import launch_up
from tests.support.database import database_url, drop_database
from tests.support.ports import free_port
from tests.support.processes import forkservers, group_members, wait_gone
from tests.support.up import WINDOW_S, run_up, started_pids, stop_up, stored_event
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
EXPECTED_DEFINITIONS = (
    {"micro_window_sensor"},
    {"micro_batch_job", "compaction_job", "freshness_check_job", "__ASSET_JOB"},
    {("raw_messages",), ("telemetry",), ("hourly_rollups",), ("compaction",)},
)


class Subscriber:
    def __init__(self, topics: list[str]) -> None:
        self.messages: queue.Queue[tuple[str, dict]] = queue.Queue()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, json.loads(m.payload)))
        self.client.connect("127.0.0.1", 1883)
        for topic in topics:
            self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def wait_for(self, predicate: Callable[[str, dict], bool], timeout_s: float) -> tuple[str, dict]:
        """The first message `predicate` accepts; those it passes over are consumed."""

        def next_accepted() -> tuple[str, dict] | None:
            while True:
                try:
                    topic, body = self.messages.get_nowait()
                except queue.Empty:
                    return None
                if predicate(topic, body):
                    return topic, body

        return wait_until(next_accepted, timeout_s, interval_s=0.1, what="the expected MQTT message")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for_row(url: str, sql: str, params: tuple, timeout_s: float) -> tuple:
    def row() -> tuple | None:
        with contextlib.suppress(psycopg.OperationalError), psycopg.connect(url) as conn:
            return conn.execute(sql, params).fetchone()
        return None

    return wait_until(row, timeout_s, interval_s=0.5, what=f"a row for {sql!r} {params}")


def loaded_definitions(port: int) -> tuple[set[str], set[str], set[tuple[str, ...]]]:
    """What the webserver's code location serves, asked the way the UI asks (GraphQL)."""
    query = (
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { sensors { name } jobs { name } } } } "
        "assetNodes { assetKey { path } } }"
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        data = json.load(response)["data"]
    [repo] = data["repositoriesOrError"]["nodes"]
    return (
        {s["name"] for s in repo["sensors"]},
        {j["name"] for j in repo["jobs"]},
        {tuple(a["assetKey"]["path"]) for a in data["assetNodes"]},
    )


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="needs the mosquitto clients")
def test_up_ingests_foreign_publishes_acks_and_stops_cleanly(up_env: dict[str, str]) -> None:
    up, banner = launch_up(up_env, "--no-simulator")
    url = up_env["IOT_DATABASE_URL"]
    device = f"dev{uuid.uuid4().hex[:6]}"
    subscriber = Subscriber([f"qs/v1/{device}/acks", "qs/v1/deadletter"])
    try:
        assert f"Dagster UI: http://127.0.0.1:{up_env['IOT_WEBSERVER_PORT']}" in banner

        assert loaded_definitions(int(up_env["IOT_WEBSERVER_PORT"])) == EXPECTED_DEFINITIONS
        time.sleep(1.0)  # the listener has subscribed by the time the UI answers; a margin for slow machines
        # IOT_RUN_WORKERS_START=first_run (the default): no run yet, so no run workers' forkserver
        assert not forkservers(up.pid)
        published = time.monotonic()
        event = stored_event(device, meta={"sensor": "dht22"})
        invalid = {"schema": 1, "event_id": f"{device}-2", "device_id": "someone-else", "event_type": "x"}
        for topic, payload in [
            (f"devices/{device}/temperature", "27.93 °C"),
            (f"qs/v1/{device}/events", json.dumps(event)),
            (f"qs/v1/{device}/events", json.dumps(invalid)),
        ]:
            subprocess.run(
                ["mosquitto_pub", "-h", "127.0.0.1", "-p", "1883", "-q", "1", "-t", topic, "-m", payload],
                check=True,
                timeout=10,
            )

        budget = WINDOW_S + 30
        value, unit = wait_for_row(
            url,
            """SELECT x.value_num, m.unit FROM measurements x JOIN devices d USING (device_id)
                    JOIN metrics m USING (metric_id) WHERE d.device_key = %s AND m.name = 'temperature'""",
            (device,),
            budget - (time.monotonic() - published),
        )
        assert (value, unit) == (27.93, "°C")
        assert len(forkservers(up.pid)) == 1  # the first run started it
        stored = wait_for_row(
            url,
            "SELECT e.event_id, e.value_num, e.meta FROM events e JOIN devices d "
            "USING (device_id) WHERE d.device_key = %s",
            (device,),
            5,
        )
        assert stored == (f"{device}-1", 23.5, {"sensor": "dht22"})
        latency = time.monotonic() - published
        print(f"publish -> queryable: {latency:.1f} s (window {WINDOW_S} s)")

        _, ack = subscriber.wait_for(lambda t, b: t.endswith("/acks") and b.get("status") == "stored", 15)
        assert ack == {"schema": 1, "event_id": f"{device}-1", "device_id": device, "status": "stored"}
        _, dead = subscriber.wait_for(
            lambda t, b: t == "qs/v1/deadletter" and device in b.get("topic", ""), 15
        )
        assert dead["error"].startswith("device_mismatch") and json.loads(dead["payload"]) == invalid
    finally:
        subscriber.close()
        stopped = time.monotonic()
        up.send_signal(signal.SIGTERM)
        try:
            code = up.wait(20)
        finally:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGKILL)
    assert code == 0
    assert time.monotonic() - stopped < 15
    groups = started_pids(banner)
    assert len(groups) == 4, banner  # code server, listener, daemon, webserver
    for group in groups:  # each child led its own process group: nothing of it may be left
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)


def test_up_with_its_own_broker_refuses_a_port_in_use(up_env: dict[str, str]) -> None:
    env = {**up_env, "IOT_MQTT_PORT": "1883"}  # the system broker is there
    result = run_up(env, "--with-broker", "--no-simulator")
    assert result.returncode == 1
    assert result.stderr.startswith("cannot start: 127.0.0.1:1883 is already in use")
    assert len(result.stderr.splitlines()) == 1


def test_broker_command_runs_the_project_configuration(up_env: dict[str, str]) -> None:
    port = free_port()
    env = {**up_env, "IOT_MQTT_PORT": str(port)}
    broker = subprocess.Popen(
        [sys.executable, "-m", "iot_etl.cli", "broker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

        def connected() -> bool:
            try:
                client.connect("127.0.0.1", port)
            except OSError:
                return False
            return True

        wait_until(connected, 15, interval_s=0.2, what="the project's broker to come up")
        client.disconnect()
        config = Path(up_env["IOT_DAGSTER_HOME"]).parent / "broker" / "mosquitto.conf"
        assert "max_queued_messages 0" in config.read_text()
        assert f"listener {port} 127.0.0.1" in config.read_text()
    finally:
        broker.terminate()
        assert broker.wait(10) == 0


def busy_loops(count: int = 2) -> list[subprocess.Popen]:
    """CPU load: as many busy shells as the machine has cores (bounded by `timeout` if a test dies), each
    in its own process group, so that `stop_loops` ends the shell too, not only `timeout`."""
    return [
        subprocess.Popen(["timeout", "120", "sh", "-c", "while :; do :; done"], start_new_session=True)
        for _ in range(count)
    ]


def stop_loops(loops: list[subprocess.Popen]) -> None:
    for loop in loops:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(loop.pid, signal.SIGKILL)
        loop.wait()


def test_fresh_home_loads_the_code_location_every_time_under_cpu_load(
    up_env: dict[str, str], tmp_path: Path
) -> None:
    """Daemon and webserver started together on a fresh SQLite home raced on creating it and the code
    location failed to load in 4 of 5 starts on a loaded machine; `up` now creates the storage first and
    announces the UI only once the location has loaded. Three starts: the race passed all three in under 1%
    of tries."""
    for attempt in range(3):
        port = free_port()
        env = {
            **up_env,
            "IOT_DAGSTER_HOME": str(tmp_path / f"home{attempt}"),
            "IOT_WEBSERVER_PORT": str(port),
        }
        load = busy_loops()
        try:
            up, banner = launch_up(env, "--no-simulator", timeout_s=300)
            try:
                assert "Dagster UI: http://" in banner
                assert loaded_definitions(port) == EXPECTED_DEFINITIONS, f"attempt {attempt}"
            finally:
                assert stop_up(up) == 0
        finally:
            stop_loops(load)


def publish_until(stop: threading.Event, topic: str) -> None:
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    n = 0
    while not stop.is_set():
        client.publish(topic, str(n), qos=1)
        n += 1
        stop.wait(0.5)
    client.loop_stop()
    client.disconnect()


def test_sigkilled_up_takes_every_process_with_it_and_one_up_per_home(up_env: dict[str, str]) -> None:
    up, banner = launch_up(up_env, "--no-simulator")
    stop_publishing = threading.Event()
    try:
        second = run_up({**up_env, "IOT_WEBSERVER_PORT": str(free_port())})
        assert second.returncode == 1
        assert second.stderr.splitlines() == [
            f"cannot start: another iot-etl up (pid {up.pid}) is running with {up_env['IOT_DAGSTER_HOME']}; "
            "stop it first"
        ]

        # messages keep windows non-empty, so micro-batch runs start: their workers (forked by the
        # daemon's forkserver, whose command line they share) must die too
        topic = f"devices/kill{uuid.uuid4().hex[:6]}/temperature"
        threading.Thread(target=publish_until, args=(stop_publishing, topic), daemon=True).start()
        groups = started_pids(banner)
        assert len(groups) == 4, banner  # code server, listener, daemon, webserver
        wait_until(
            lambda: sum("multiprocessing.forkserver" in cmd for cmd in group_members(groups).values()) >= 2,
            120,
            interval_s=0.1,
            what="a run worker to start",
        )
        processes = group_members(groups)
        os.kill(up.pid, signal.SIGKILL)
        up.wait(10)
    finally:
        stop_publishing.set()
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
    assert len(processes) >= 6, (
        processes
    )  # code server, listener, daemon, webserver, forkserver, a run worker
    left = wait_gone(set(processes), timeout_s=60)
    assert not left, {pid: processes[pid] for pid in left}

    again, _ = launch_up(up_env, "--no-simulator")
    assert stop_up(again) == 0


def test_dagster_postgres_storage_runs_micro_batches(up_env: dict[str, str]) -> None:
    """With IOT_RUN_WORKERS_START=daemon_start, the run workers' forkserver is there before any run."""
    name = f"iot_dagster_{uuid.uuid4().hex[:8]}"
    env = {**up_env, "IOT_DAGSTER_PG_URL": database_url(name), "IOT_RUN_WORKERS_START": "daemon_start"}
    up, _ = launch_up(env, "--no-simulator")
    try:
        server = wait_until(lambda: forkservers(up.pid), 60, interval_s=0.2, what="the forkserver")
        assert wait_for_row(database_url(name), "SELECT count(*) FROM runs", (), 10) == (0,)
        device = f"pg{uuid.uuid4().hex[:6]}"
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.connect("127.0.0.1", 1883)
        client.loop_start()
        client.publish(f"devices/{device}/temperature", "21.5", qos=1).wait_for_publish(10)
        client.loop_stop()
        client.disconnect()
        value = wait_for_row(
            up_env["IOT_DATABASE_URL"],
            "SELECT x.value_num FROM measurements x JOIN devices d USING (device_id) WHERE d.device_key = %s",
            (device,),
            WINDOW_S + 90,
        )
        assert value == (21.5,)
        status = wait_for_row(
            database_url(name), "SELECT status FROM runs WHERE status = 'SUCCESS' LIMIT 1", (), 30
        )
        assert status == ("SUCCESS",)
        assert forkservers(up.pid) == server  # the run was forked from it
        assert "postgresql+psycopg2" in (Path(env["IOT_DAGSTER_HOME"]) / "dagster.yaml").read_text()
    finally:
        try:
            assert stop_up(up) == 0
        finally:
            drop_database(name)


REFUSE_DEFINITIONS = """
import sys


class RefuseDefinitions:
    def find_spec(self, name, path=None, target=None):
        if name == "dagster_project.definitions":
            raise ImportError("definitions refused by the test")
        return None


sys.meta_path.insert(0, RefuseDefinitions())
"""


def test_code_location_that_fails_to_load_is_one_line_and_stops_everything(
    up_env: dict[str, str], tmp_path: Path
) -> None:
    """Every Python process of the stack runs this `sitecustomize`, so the code servers cannot import the
    definitions, as with a broken deployment."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(REFUSE_DEFINITIONS)
    result = run_up({**up_env, "PYTHONPATH": str(site)}, timeout_s=300)
    assert result.returncode == 1
    refusals = [line for line in result.stderr.splitlines() if line.startswith("cannot start:")]
    assert len(refusals) == 1, result.stderr
    assert refusals[0].startswith("cannot start: the code location failed to load: ")
    assert "definitions refused by the test" in refusals[0]
    assert "Dagster UI" not in result.stdout
    assert result.stdout.rstrip().endswith("stopped")
    assert not wait_gone(started_pids(result.stdout), timeout_s=30)
