"""A whole pipeline for fault tests: `iot-etl up` on a private broker, Redis (AOF, fsync always) and
PostgreSQL, each of which a test may stop, kill or restart; `up` itself can be killed and started again on
the same Dagster home. Publishing a known set of messages and accounting for each of them in the database
(stored as a fact row, rejected with a reason, or lost) is here too."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg

from iot_etl.launch import launch_up
from tests.support.mosquitto import PrivateMosquitto
from tests.support.ports import free_port
from tests.support.postgres_server import PrivatePostgres
from tests.support.processes import group_members, wait_gone
from tests.support.redis_server import PrivateRedis
from tests.support.waiting import wait_until

WINDOW_S = 10
HEAL_AFTER_S = 20
STREAM_PREFIX = "faults:raw"


class FaultStack:
    """Private services plus one `iot-etl up` on them (restartable); `close()` stops all of it."""

    def __init__(self, workdir: Path) -> None:
        self.broker = PrivateMosquitto()
        self.redis = PrivateRedis(aof=True)
        self.postgres = PrivatePostgres()
        self.database_url = self.postgres.url("iot_faults")
        self.webserver_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
        self.env.update(
            {
                **self.broker.env(),
                **self.redis.env(),
                "IOT_DATABASE_URL": self.database_url,
                "IOT_STREAM_PREFIX": STREAM_PREFIX,
                "IOT_LISTENER_CLIENT_ID": f"listener-faults-{os.getpid()}",
                "IOT_LISTENER_METRICS_PORT": "0",
                "IOT_DAGSTER_HOME": str(workdir / "dagster_home"),
                "IOT_WEBSERVER_PORT": str(self.webserver_port),
                "IOT_WINDOW_SECONDS": str(WINDOW_S),
                "IOT_WINDOW_GRACE_MS": "500",
                "IOT_SENSOR_HEAL_AFTER_S": str(HEAL_AFTER_S),
            }
        )
        self.up: subprocess.Popen[str] | None = None
        self.banner = ""

    def start(self) -> FaultStack:
        self.broker.start()
        self.redis.start()
        self.postgres.start()
        self.start_up()
        return self

    # --- iot-etl up --------------------------------------------------------------------------------
    def start_up(self) -> None:
        self.up, self.banner = launch_up(self.env, "--no-simulator", timeout_s=300)

    def ensure_up(self) -> None:
        """Start `up` again if a fault (or an earlier test) stopped it."""
        if self.up is None or self.up.poll() is not None:
            self.start_up()

    def child_pid(self, name: str) -> int:
        match = re.search(rf"^started {re.escape(name)} \(pid (\d+)\)$", self.banner, re.M)
        assert match, self.banner
        return int(match.group(1))

    def children(self) -> dict[int, str]:
        """Every live process of `up`'s children's groups (code servers and run workers included)."""
        groups = {int(p) for p in re.findall(r"^started \S+ \(pid (\d+)\)$", self.banner, re.M)}
        return group_members(groups)

    def wait_up_gone(self, processes: dict[int, str], timeout_s: float = 90) -> None:
        assert self.up is not None
        self.up.wait(timeout_s)
        left = wait_gone(set(processes), timeout_s=timeout_s)
        assert not left, {pid: processes[pid] for pid in left}

    def kill_up(self) -> None:
        """SIGKILL `up` and wait until everything it started is gone (its reaper sees to that)."""
        assert self.up is not None
        processes = self.children()
        os.kill(self.up.pid, signal.SIGKILL)
        self.wait_up_gone(processes)

    def stop_up(self) -> None:
        if self.up is None or self.up.poll() is not None:
            return
        self.up.send_signal(signal.SIGTERM)
        try:
            self.up.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.up.pid, signal.SIGKILL)
            self.up.wait(10)

    def close(self) -> None:
        try:
            self.stop_up()
        finally:
            self.broker.close()
            self.redis.close()
            self.postgres.close()

    # --- Dagster, asked the way the UI asks --------------------------------------------------------
    def graphql(self, query: str, variables: dict[str, object]) -> dict[str, object]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.webserver_port}/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return dict(json.load(response)["data"])

    def runs(self, statuses: list[str] | None = None) -> list[dict[str, object]]:
        """Runs (newest first) with one of `statuses`, or all of them."""
        query = (
            "query($s: [RunStatus!]) { runsOrError(filter: {statuses: $s}) { ... on Runs "
            "{ results { runId status tags { key value } } } } }"
        )
        return list(self.graphql(query, {"s": statuses})["runsOrError"]["results"])  # type: ignore[index]

    def wait_idle(self, timeout_s: float = 300) -> None:
        """Until no run is queued, starting, running or canceling: an earlier phase's last runs and heals
        would otherwise take the run slots a phase means to catch."""
        in_flight = ["QUEUED", "STARTING", "STARTED", "CANCELING"]
        if not wait_until(lambda: not self.runs(in_flight), timeout_s, interval_s=1):
            raise AssertionError(f"runs still in flight after {timeout_s:.0f} s: {self.runs(in_flight)}")

    def terminate(self, run_id: str) -> str:
        """The UI's Terminate button; the mutation's result type (TerminateRunSuccess when accepted)."""
        query = (
            "mutation($r: String!) { terminateRun(runId: $r) { __typename "
            "... on TerminateRunFailure { message } ... on PythonError { message } } }"
        )
        result = self.graphql(query, {"r": run_id})["terminateRun"]
        return f"{result['__typename']}: {result.get('message', '')}"  # type: ignore[index]

    def stream_entries(self) -> int:
        with self.redis.client() as client:
            return int(client.xlen(STREAM_PREFIX))


def messages_for(tag: str, count: int, devices: int = 5) -> list[tuple[str, str]]:
    """`count` distinct messages of `devices` device ids starting with `tag`: plain readings with a device
    timestamp (a redelivery is recognised as a duplicate), valid events, and every tenth an event whose
    payload names another device (rejected, `device_mismatch`)."""
    out: list[tuple[str, str]] = []
    base = datetime.now(UTC).timestamp()
    for i in range(count):
        device = f"{tag}-{i % devices}"
        if i % 10 == 9:
            body = {"schema": 1, "event_id": f"{tag}-{i}", "device_id": "someone-else", "event_type": "x"}
            out.append((f"qs/v1/{device}/events", json.dumps(body)))
        elif i % 10 == 4:
            body = {"schema": 1, "event_id": f"{tag}-{i}", "device_id": device, "event_type": "t", "value": i}
            out.append((f"qs/v1/{device}/events", json.dumps(body)))
        else:
            ts = datetime.fromtimestamp(base + i / 1000, UTC).isoformat()
            out.append((f"devices/{device}/temperature", json.dumps({"value": i, "ts": ts})))
    return out


class Publisher:
    """Publishes messages with QoS 1 at `rate` per second in a thread; `wait()` until all are PUBACKed."""

    def __init__(self, broker: PrivateMosquitto, messages: list[tuple[str, str]], rate: float) -> None:
        self.messages = messages
        self.rate = rate
        self.sent = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.infos: list[mqtt.MQTTMessageInfo] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        for i, (topic, payload) in enumerate(self.messages):
            self.infos.append(self.client.publish(topic, payload, qos=1))
            self.sent = i + 1
            time.sleep(max(0.0, started + (i + 1) / self.rate - time.monotonic()))

    def wait(self, timeout_s: float = 300) -> int:
        """Block until every message is sent and acknowledged; the number acknowledged."""
        deadline = time.monotonic() + timeout_s
        self.thread.join(timeout_s)
        for info in self.infos:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        self.client.disconnect()
        self.client.loop_stop()
        return sum(1 for info in self.infos if info.is_published())


@dataclass(frozen=True)
class Accounting:
    published: int
    stored: int  # a fact row (measurement or event) came of it
    rejected: int  # no fact row, a rejection with a reason
    lost: int  # neither (not archived, or archived and never decoded)
    archived: int  # raw_messages rows of the whole stack (redeliveries included)
    stream_entries: int  # entries in the stream of the whole stack

    @property
    def complete(self) -> bool:
        return self.lost == 0 and self.archived == self.stream_entries


ACCOUNT_SQL = """
SELECT r.topic, r.payload,
       r.raw_id IN (SELECT raw_id FROM measurements UNION SELECT raw_id FROM events) AS stored,
       r.raw_id IN (SELECT raw_id FROM rejected) AS rejected
FROM raw_messages r WHERE r.topic LIKE ANY(%s)
"""


def account(stack: FaultStack, tag: str, messages: list[tuple[str, str]]) -> Accounting:
    """What became of each published message, by (topic, payload) in the archive."""
    outcome: dict[tuple[str, str], str] = {}
    try:
        with psycopg.connect(stack.database_url, connect_timeout=10) as conn:
            rows = conn.execute(ACCOUNT_SQL, ([f"devices/{tag}-%", f"qs/v1/{tag}-%"],)).fetchall()
            archived = conn.execute("SELECT count(*) FROM raw_messages").fetchone()
    except psycopg.OperationalError:
        rows, archived = [], (0,)
    for topic, payload, stored, rejected in rows:
        key = (topic, bytes(payload).decode())
        if stored:
            outcome[key] = "stored"
        elif rejected and outcome.get(key) != "stored":
            outcome[key] = "rejected"
    kinds = [outcome.get(m, "lost") for m in set(messages)]
    return Accounting(
        published=len(messages),
        stored=kinds.count("stored"),
        rejected=kinds.count("rejected"),
        lost=kinds.count("lost"),
        archived=int(archived[0]) if archived else 0,
        stream_entries=stack.stream_entries(),
    )


def wait_accounted(
    stack: FaultStack, tag: str, messages: list[tuple[str, str]], since: float, timeout_s: float
) -> tuple[Accounting, float]:
    """Poll until every message is stored or rejected and the whole stream is archived (or time is up);
    the last accounting and how long it took from `since` (a `time.monotonic()`: the fault's end)."""

    def complete() -> Accounting | None:
        result = account(stack, tag, messages)
        return result if result.complete else None

    result = wait_until(complete, since + timeout_s - time.monotonic(), interval_s=5)
    return result or account(stack, tag, messages), time.monotonic() - since


def tags(run: dict[str, object]) -> dict[str, str]:
    """A run's tags (as `FaultStack.runs` returns runs) as a dict."""
    return {str(t["key"]): str(t["value"]) for t in run["tags"]}  # type: ignore[attr-defined]


def run_summary(runs: list[dict[str, object]]) -> str:
    """`N runs: F failed, R retries, H heals` of a phase's runs (as `FaultStack.runs` returns them)."""
    failed = sum(1 for run in runs if run["status"] == "FAILURE")
    retries = sum(1 for run in runs if "dagster/retry_number" in tags(run))
    heals = sum(1 for run in runs if tags(run).get("iot/kind") == "heal")
    return f"{len(runs)} runs: {failed} failed, {retries} retries, {heals} heals"
