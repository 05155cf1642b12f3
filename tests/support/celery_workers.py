"""Celery workers of dagster-celery (`celery -A dagster_celery.app worker`), each a real process on this
machine consuming one queue of a private Redis, with the environment a worker on another machine would have:
the product's IOT_* settings and a DAGSTER_HOME whose dagster.yaml names the shared PostgreSQL storage.

`micro_batch_job` is the reconstructor of the product's job: a run created with its origin is executed by
the worker that takes it, in its pool process, which stays for the next run (a warm worker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
#: How long a worker may take to import Dagster and connect, on a loaded 2-core machine.
START_TIMEOUT_S = 120


def micro_batch_job() -> Any:
    """The product's `micro_batch_job`, as the code location defines it."""
    from dagster_project.definitions import defs

    return defs.resolve_job_def("micro_batch_job")


def celery_run_launcher(broker: str, backend: str, default_queue: str) -> dict[str, Any]:
    """The run launcher block of dagster.yaml for dagster-celery's CeleryRunLauncher."""
    return {
        "module": "dagster_celery.launcher",
        "class": "CeleryRunLauncher",
        "config": {"broker": broker, "backend": backend, "default_queue": default_queue},
    }


@contextmanager
def celery_worker(
    name: str, queue: str, broker: str, backend: str, dagster_home: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """One worker with one pool process (`-c 1`) consuming `queue`; stopped (warm shutdown) on exit."""
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "PYTHONPATH": str(ROOT)}
    command = [
        *(sys.executable, "-m", "celery", "-A", "dagster_celery.app"),
        *("-b", broker, "--result-backend", backend),
        *("worker", "-Q", queue, "-c", "1", "-n", f"{name}@%h", "-l", "INFO"),
        *("--without-heartbeat", "--without-mingle", "--without-gossip"),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: b" ready." in log.read_bytes() or process.poll() is not None,
            START_TIMEOUT_S,
            what=f"celery worker {name} to be ready",
        )
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
