"""Three shards through Dagster's own daemon: the sensor's runs queued by the QueuedRunCoordinator with the
limits `iot-etl dagster-instance` writes (three runs at once, one per shard), launched by the forking
launcher. Runs of different shards overlap in time (start and end from Dagster's run storage), runs of one
shard never do, and a shard whose every run the database refuses does not stop the other shards' windows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from pydantic import SecretStr

from dagster_project.defs.ingest.shards import SHARD_TAG
from iot_core.settings import Settings
from iot_etl.dagster_instance import create_instance_storage, write_instance_config
from tests.support.database import database_url, drop_database
from tests.support.processes import group_members, kill_all, wait_gone
from tests.support.shards import device_of_shard, sharded_settings, xadd
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHARDS = 3
POISONED = 1
#: readings per healthy shard, written over a few windows
READINGS = 24
#: how long the daemon may take to start, load the code location and process the windows (loaded machine)
PROCESSED_WITHIN_S = 420

#: A refusal by the database of every batch of one shard: that shard's runs fail, not transiently.
REFUSE_SHARD = """
CREATE FUNCTION refuse_shard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'batches of shard % are refused (test)', NEW.shard; END $$;
CREATE TRIGGER refuse_shard BEFORE INSERT ON batches FOR EACH ROW WHEN (NEW.shard = {shard})
EXECUTE FUNCTION refuse_shard();
"""


@pytest.fixture
def shards(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Three shards on a database and prefix of their own, 5 s windows, Dagster on a PostgreSQL storage of
    its own in a temporary DAGSTER_HOME."""
    dagster_db = f"iot_shards_dagster_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dagster_db}"')
    try:
        with sharded_settings(
            settings,
            SHARDS,
            window_seconds=5,
            window_grace_ms=500,
            max_concurrent_runs=3,
            runs_per_shard=1,
            dagster_home=tmp_path / "dagster_home",
            dagster_pg_url=SecretStr(database_url(dagster_db)),
            dagster_run_launcher="forking",
        ) as value:
            yield value
    finally:
        drop_database(dagster_db)


def env_of(settings: Settings) -> dict[str, str]:
    """The daemon's environment: the session's without IOT_*, and these settings'."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
    env.update(
        {
            "IOT_DATABASE_URL": settings.database_url.get_secret_value(),
            "IOT_REDIS_URL": settings.redis_url.get_secret_value(),
            "IOT_STREAM_PREFIX": settings.stream_prefix,
            "IOT_STREAM_SHARDS": str(settings.stream_shards),
            "IOT_WINDOW_SECONDS": str(settings.window_seconds),
            "IOT_WINDOW_GRACE_MS": str(settings.window_grace_ms),
            "IOT_DAGSTER_HOME": str(settings.dagster_home),
            "DAGSTER_HOME": str(settings.dagster_home),
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def start_daemon(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    home = write_instance_config(settings)
    create_instance_storage(home)
    workspace = home / "workspace.yaml"
    location = {"module_name": "dagster_project.definitions", "attribute": "defs"}
    location.update({"location_name": "iot_pipeline", "working_directory": str(ROOT)})
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": location}]}))
    daemon = str(Path(sys.executable).parent / "dagster-daemon")
    with log.open("wb") as out:
        return subprocess.Popen(
            [daemon, "run", "-w", str(workspace)],
            env=env_of(settings),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """The daemon and whatever it started (its session's process group)."""
    members = set(group_members({process.pid}))
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    kill_all(wait_gone(members, 30))


def stored_per_device(settings: Settings) -> dict[str, int]:
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        rows = conn.execute(
            "SELECT d.device_key, count(*) FROM measurements m JOIN devices d USING (device_id) GROUP BY 1"
        ).fetchall()
    return dict(rows)


SUCCESS = DagsterRunStatus.SUCCESS


def finished_runs(settings: Settings) -> list[tuple[str, DagsterRunStatus, tuple[float, float]]]:
    """The shard, status and (start, end) of every micro-batch run that has ended."""
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        records = instance.get_run_records(RunsFilter(job_name="micro_batch_job"))
        return [
            (r.dagster_run.tags[SHARD_TAG], r.dagster_run.status, (r.start_time, r.end_time))
            for r in records
            if r.start_time is not None and r.end_time is not None
        ]


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_shards_run_in_parallel_and_a_failing_shard_does_not_stop_the_others(
    shards: Settings, tmp_path: Path
) -> None:
    with psycopg.connect(shards.database_url.get_secret_value()) as conn:
        conn.execute(REFUSE_SHARD.format(shard=POISONED))
    devices = {n: device_of_shard(shards, n) for n in range(SHARDS)}
    daemon = start_daemon(shards, tmp_path / "daemon.log")
    stop_writing = threading.Event()

    def write() -> None:  # a reading per shard every 0.5 s, over a few windows
        for _ in range(READINGS):
            for device in devices.values():
                xadd(shards, device)
            if stop_writing.wait(0.5):
                return

    writer = threading.Thread(target=write)
    writer.start()
    try:
        healthy = {devices[n] for n in range(SHARDS) if n != POISONED}
        healthy_shards = {str(n) for n in range(SHARDS) if n != POISONED}
        # a run commits its pages before its checks finish: wait for its end too, not only for the rows
        wait_until(
            lambda: (
                all(stored_per_device(shards).get(d, 0) == READINGS for d in healthy)
                and healthy_shards
                <= {shard for shard, status, _ in finished_runs(shards) if status == SUCCESS}
            ),
            PROCESSED_WITHIN_S,
            interval_s=2,
            what=f"every reading of the healthy shards stored by runs that succeeded (daemon log: "
            f"{tmp_path / 'daemon.log'})",
        )
        runs = finished_runs(shards)
    finally:
        stop_writing.set()
        writer.join()
        stop(daemon)
    assert stored_per_device(shards).get(devices[POISONED], 0) == 0, "the refused shard stored nothing"
    poisoned = [status for shard, status, _ in runs if shard == str(POISONED)]
    assert poisoned and all(s == DagsterRunStatus.FAILURE for s in poisoned), poisoned
    succeeded = {shard for shard, status, _ in runs if status == SUCCESS}
    assert succeeded == {str(n) for n in range(SHARDS) if n != POISONED}
    across = [
        (a, b) for i, a in enumerate(runs) for b in runs[i + 1 :] if a[0] != b[0] and overlaps(a[2], b[2])
    ]
    assert across, "runs of different shards ran at the same time"
    within = [
        (a, b) for i, a in enumerate(runs) for b in runs[i + 1 :] if a[0] == b[0] and overlaps(a[2], b[2])
    ]
    assert within == [], "the queue ran at most one run per shard at a time"
