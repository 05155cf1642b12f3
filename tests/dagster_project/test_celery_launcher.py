"""The product's micro-batch runs on warm Celery workers, launched by dagster-celery's CeleryRunLauncher:
two workers on loopback (as on two machines: each its own process, DAGSTER_HOME and queue, sharing only the
broker, Dagster's PostgreSQL storage, Redis and the database), windows the sensor requested, each run routed
by its queue tag, the pool process of a worker reused by its next run, and a rerun that changes nothing."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
import yaml
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunRequest, build_reconstructable_job

from iot_core.settings import Settings
from iot_etl.dagster_instance import instance_config
from tests.support import PrivateRedis
from tests.support.celery_workers import celery_run_launcher, celery_worker
from tests.support.database import database_url, drop_database
from tests.support.pipeline import SensorDriver
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.slow]

QUEUE_TAG = "dagster-celery/queue"
PARTITION_TAG = "dagster/partition"
RUN_TIMEOUT_S = 300
COUNTED = ("raw_messages", "measurements")


@pytest.fixture
def dagster_home(tmp_path: Path, settings: Settings) -> Iterator[tuple[Path, str, str]]:
    """A DAGSTER_HOME on a PostgreSQL storage of its own, with the CeleryRunLauncher on a private Redis."""
    name = f"iot_celery_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with PrivateRedis() as broker:
            broker_url, backend_url = f"{broker.url.rsplit('/', 1)[0]}/0", f"{broker.url.rsplit('/', 1)[0]}/1"
            home = tmp_path / "dagster_home"
            storage = Settings(dagster_pg_url=database_url(name), dagster_home=home)
            config = instance_config(storage, celery_run_launcher(broker_url, backend_url, "iot-a"))
            home.mkdir()
            (home / "dagster.yaml").write_text(yaml.safe_dump(config))
            yield home, broker_url, backend_url
    finally:
        drop_database(name)


def xadd(settings: Settings, topic: str, payload: bytes) -> int:
    """An entry as the listener writes it; its id's milliseconds."""
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    entry = client.xadd(
        settings.stream_prefix,
        {"topic": topic, "payload": payload, "qos": "1", "retain": "0", "rx_us": str(time.time_ns() // 1000)},
    )
    return int(entry.split(b"-")[0])


def redis_ms(settings: Settings) -> int:
    seconds, micros = redis.Redis.from_url(settings.redis_url.get_secret_value()).time()
    return int(seconds) * 1000 + int(micros) // 1000


def launch(instance: DagsterInstance, request: RunRequest, queue: str) -> DagsterRun:
    """What the daemon does with a request: a run of the code location's job, handed to the launcher."""
    recon = build_reconstructable_job("tests.support.celery_workers", "micro_batch_job")
    run = instance.create_run_for_job(
        job_def=recon.get_definition(),
        run_config=request.run_config,
        tags={**request.tags, PARTITION_TAG: str(request.partition_key), QUEUE_TAG: queue},
        job_code_origin=recon.get_python_origin(),
        status=DagsterRunStatus.NOT_STARTED,
    )
    return instance.launch_run(run.run_id, workspace=None)  # ty: ignore[invalid-argument-type]


def finished(instance: DagsterInstance, run_id: str) -> DagsterRun:
    def done() -> DagsterRun | None:
        run = instance.get_run_by_id(run_id)
        return run if run is not None and run.is_finished else None

    return wait_until(done, RUN_TIMEOUT_S, interval_s=0.5, what=f"run {run_id} to finish")


def worker_pid(instance: DagsterInstance, run_id: str) -> int:
    """The process that executed the run (its 'Started process for run' event)."""
    for record in instance.all_logs(run_id):
        found = re.search(r"Started process for run \(pid: (\d+)\)", record.message or "")
        if found:
            return int(found[1])
    raise AssertionError(f"run {run_id} names no process")


def next_request(driver: SensorDriver) -> RunRequest:
    requests: list[RunRequest] = wait_until(driver.tick, 120, interval_s=1.0, what="a run request")
    [request] = requests
    return request


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED}


def test_two_warm_celery_workers_run_the_sensors_windows(
    clean_db: str, settings: Settings, dagster_home: tuple[Path, str, str], tmp_path: Path
) -> None:
    home, broker, backend = dagster_home
    with (
        celery_worker("worker-a", "iot-a", broker, backend, home, tmp_path / "a.log"),
        celery_worker("worker-b", "iot-b", broker, backend, home, tmp_path / "b.log"),
        DagsterInstance.from_config(str(home)) as instance,
    ):
        assert type(instance.run_launcher).__name__ == "CeleryRunLauncher"
        driver = SensorDriver(settings, instance)
        first_ms = xadd(settings, "devices/celery-1/temperature", b"21.5")
        first = next_request(driver)
        run_a = finished(instance, launch(instance, first, "iot-a").run_id)

        # the next window: after the first one's end, by Redis's clock
        next_window_ms = (first_ms // settings.window_ms + 1) * settings.window_ms
        wait_until(lambda: redis_ms(settings) >= next_window_ms, 60, what="the next window")
        xadd(settings, "devices/celery-2/temperature", b"22.5")
        second = next_request(driver)
        run_b = finished(instance, launch(instance, second, "iot-b").run_id)
        again = finished(instance, launch(instance, first, "iot-a").run_id)  # the first window once more

        for run in (run_a, run_b, again):
            logs = "".join((tmp_path / f"{w}.log").read_text()[-2000:] for w in "ab")
            assert run.status == DagsterRunStatus.SUCCESS, (run.run_id, logs)
        assert worker_pid(instance, run_a.run_id) == worker_pid(instance, again.run_id), "a warm worker"
        assert worker_pid(instance, run_a.run_id) != worker_pid(instance, run_b.run_id)
        assert counts(clean_db) == {"raw_messages": 2, "measurements": 2}, "the rerun added nothing"
        with psycopg.connect(clean_db) as conn:
            runs = {r for (r,) in conn.execute("SELECT run_id FROM batches")}
        assert {run_a.run_id, run_b.run_id} <= runs
