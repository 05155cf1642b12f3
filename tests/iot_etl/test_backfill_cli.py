"""`iot-etl backfill` against a real Dagster webserver and daemon started on the project: an hour that
holds a stream entry nobody processed is backfilled through GraphQL, followed to its end, and its rows
land in the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
import redis

from iot_core.errors import UserFacingError
from iot_etl.backfill import DagsterUi
from tests.support.database import database_url, drop_database
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def project(tmp_path: Path) -> Iterator[dict[str, str]]:
    name = f"iot_backfill_{uuid.uuid4().hex[:8]}"
    home = tmp_path / "dagster_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
    env.update(
        IOT_DATABASE_URL=database_url(name),
        IOT_STREAM_PREFIX=f"test:{name}:raw",
        IOT_DAGSTER_HOME=str(home),
        DAGSTER_HOME=str(home),
        IOT_WEBSERVER_PORT=str(free_port()),
        IOT_SENSOR_HEAL_LOOKBACK_HOURS="1",  # the sensor leaves the old hour to the backfill
        # the backfilled hour is older than the installation: its start moved back as for imported data
        IOT_PARTITIONS_START=(datetime.now(UTC) - timedelta(hours=6)).strftime("%Y-%m-%d-%H:00"),
    )
    for command in (["db", "migrate"], ["dagster-instance"]):
        done = subprocess.run([str(BIN / "iot-etl"), *command], env=env, cwd=ROOT, capture_output=True)
        assert done.returncode == 0, done.stderr
    # Dagster's storage made before the webserver and the daemon start, as `up` makes it: started together
    # on a fresh home they race to create it (`alembic_version has more than one head`)
    done = subprocess.run(
        [sys.executable, "-m", "iot_etl.dagster_instance", str(home)], env=env, cwd=ROOT, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    yield env
    drop_database(name)
    client = redis.Redis()
    for key in client.scan_iter(f"test:{name}:*"):
        client.delete(key)


def _serving(port: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
            return True
    except OSError:
        return False


def test_backfill_reprocesses_an_hour_and_follows_it_to_the_end(project: dict[str, str]) -> None:
    hour = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    at_ms = int((hour + timedelta(minutes=7)).timestamp() * 1000)
    redis.Redis().xadd(
        f"{project['IOT_STREAM_PREFIX']}",
        {
            "topic": "devices/bf0001/temperature",
            "payload": b"21.5",
            "qos": "1",
            "retain": "0",
            "rx_us": str(at_ms * 1000),
        },
        id=f"{at_ms}-0",
    )
    port = project["IOT_WEBSERVER_PORT"]
    processes = [
        subprocess.Popen(
            [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", port],
            cwd=ROOT,
            env=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        ),
        subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=ROOT,
            env=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        ),
    ]
    try:

        def serving() -> bool:
            if _serving(port):
                return True
            assert all(p.poll() is None for p in processes)
            return False

        wait_until(serving, 240, interval_s=1, what="the webserver to come up")
        key = hour.strftime("%Y-%m-%dT%H")
        result = subprocess.run(
            [str(BIN / "iot-etl"), "backfill", "--from", key, "--to", key],
            cwd=ROOT,
            env=project,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr
        first, *_, last = result.stdout.splitlines()
        assert f"1 hour(s) {hour:%Y-%m-%d-%H:00}" in first and f"127.0.0.1:{port}/runs/b/" in first
        assert "completed: 3 of 3 hour-assets materialized" in last
        # progress, one line per change when stderr is not a terminal
        progress = result.stderr.splitlines()
        assert progress and all(line.startswith("backfill ") for line in progress)
        assert "COMPLETED_SUCCESS: 3/3" in progress[-1]
        with psycopg.connect(project["IOT_DATABASE_URL"]) as conn:
            (raw,) = conn.execute("SELECT count(*) FROM raw_messages").fetchone()
            (values,) = conn.execute("SELECT array_agg(value_num) FROM measurements").fetchone()
        assert raw == 1 and values == [21.5]
    finally:
        for process in processes:
            os.killpg(process.pid, 15)
        for process in processes:
            process.wait(60)


class _LoadingThenReady(BaseHTTPRequestHandler):
    """Answers 500 to the first `failures` POSTs, as a webserver still loading its code location does."""

    failures = 2
    posts = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).posts += 1
        ready = type(self).posts > type(self).failures
        body = json.dumps({"data": {"ok": True}} if ready else {"error": "loading"}).encode()
        self.send_response(200 if ready else 500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_webserver_error_is_asked_again_until_the_timeout() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LoadingThenReady)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert DagsterUi(url, timeout_s=30).query("{ ok }", {}) == {"ok": True}
        assert _LoadingThenReady.posts == 3
        _LoadingThenReady.failures = 10**6
        with pytest.raises(UserFacingError, match="Internal Server Error"):
            DagsterUi(url, timeout_s=2).query("{ ok }", {})
    finally:
        server.shutdown()
