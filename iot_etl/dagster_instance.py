"""The Dagster instance configuration (`dagster.yaml` in DAGSTER_HOME), written from settings."""

from __future__ import annotations

from pathlib import Path

import yaml

from iot_core.settings import Settings


def instance_config(settings: Settings) -> dict:
    """SQLite in DAGSTER_HOME by default, PostgreSQL when IOT_DAGSTER_PG_URL is set.

    Queued runs with a 1 s dequeue interval (the 5 s default adds up to 5 s to every micro-batch) and
    at most two at once, so a backfill of many hours cannot starve the listener on a small machine.
    """
    config: dict = {
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"max_concurrent_runs": 2, "dequeue_interval_seconds": 1},
        },
        "telemetry": {"enabled": False},
        # a micro-batch that failed on a passing fault (database restart) runs again by itself
        "run_retries": {"enabled": True, "max_retries": 3},
        # ~25 event-log rows per run and a run a minute: keep tick history bounded
        "retention": {
            "schedule": {"purge_after_days": 30},
            "sensor": {"purge_after_days": {"skipped": 1, "failure": 30, "success": 30}},
        },
    }
    if settings.dagster_pg_url:
        # the URL is read by Dagster from the environment, so the secret is not written to disk
        config["storage"] = {"postgres": {"postgres_url": {"env": "IOT_DAGSTER_PG_URL"}}}
    else:
        config["storage"] = {"sqlite": {"base_dir": str(dagster_home(settings) / "storage")}}
    return config


def dagster_home(settings: Settings) -> Path:
    return settings.dagster_home.expanduser().resolve()


def write_instance_config(settings: Settings) -> Path:
    home = dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    path.write_text(yaml.safe_dump(instance_config(settings), sort_keys=False), encoding="utf-8")
    return home
