"""The Dagster instance configuration (`dagster.yaml` in DAGSTER_HOME), written from settings, and the
one-time creation of the instance's storage."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

from iot_core.errors import UserFacingError
from iot_core.settings import Settings

# Dagster reads the storage password from this variable; `iot-etl up` sets it for its children from
# IOT_DAGSTER_PG_URL, so the secret never lands in dagster.yaml.
PG_PASSWORD_ENV = "DAGSTER_PG_PASSWORD"

# dagster-postgres under SQLAlchemy 2.1 maps a bare `postgresql://` URL to psycopg 3, with which its
# `NOTIFY run_events, $1` fails on the first event write; psycopg2 binds parameters client-side and works.
PG_SCHEME = "postgresql+psycopg2"

# Run monitoring (the daemon's run-monitoring loop). A run worker starts in ~2 s on a quiet machine and in
# tens of seconds on a loaded 2-core one; a run that is still STARTING after START_TIMEOUT_S has lost its
# worker (daemon or code server died while launching) and is failed, so run_retries launches it again.
# The forking launcher checks each poll whether a STARTED run's worker still lives; with Dagster's default
# launcher a run left STARTED by a dead worker is only caught by the runtime bound (micro-batches take
# seconds, six-hour backfill runs minutes).
RUN_START_TIMEOUT_S = 120
RUN_CANCEL_TIMEOUT_S = 120
RUN_MAX_RUNTIME_S = 3600
RUN_MONITORING_POLL_S = 30
# The run launcher `forking` selects (IOT_DAGSTER_RUN_LAUNCHER); `default` leaves Dagster's own in place.
FORKING_RUN_LAUNCHER = {"module": "dagster_project.run_launcher", "class": "ForkingRunLauncher"}
# Its config key for when its forkserver starts (IOT_RUN_WORKERS_START).
FORKSERVER_START_KEY = "forkserver_start"
# Dagster's queued run coordinator, or with IOT_RUN_WORKERS_START=daemon_start the same that builds the
# forking launcher as the daemon starts (Dagster builds it at the first run otherwise).
QUEUED_RUN_COORDINATOR = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
PREFORKING_RUN_COORDINATOR = {"module": "dagster_project.run_launcher", "class": "PreforkingRunCoordinator"}
# The keys of a run launcher block in dagster.yaml.
LAUNCHER_KEYS = {"module", "class", "config"}
# Only launchers that can re-attach to a run (Kubernetes, Docker) resume runs; the default one cannot.
RUN_MAX_RESUME_ATTEMPTS = 0
# Concurrency-pool slots of a run that ended without releasing them (crash) are freed after this long.
RUN_FREE_SLOTS_AFTER_END_S = 300


def instance_config(settings: Settings, run_launcher: Mapping[str, Any] | None = None) -> dict:
    """SQLite in DAGSTER_HOME by default, PostgreSQL when IOT_DAGSTER_PG_URL is set.

    Queued runs with a 1 s dequeue interval (the 5 s default adds up to 5 s to every micro-batch) and
    at most IOT_MAX_CONCURRENT_RUNS at once (two by default), so a backfill of many hours cannot starve the
    listener on a small machine; with several stream shards, at most IOT_RUNS_PER_SHARD of them per shard
    (`run_coordinator_config`).
    `run_launcher` (module, class, config) replaces the launcher IOT_DAGSTER_RUN_LAUNCHER selects: one of
    Dagster's own, to start runs elsewhere (`load_run_launcher`).
    """
    config: dict = {
        "run_coordinator": {**QUEUED_RUN_COORDINATOR, "config": run_coordinator_config(settings)},
        "telemetry": {"enabled": False},
        # a micro-batch that failed on a passing fault (database restart) runs again by itself
        "run_retries": {"enabled": True, "max_retries": 3},
        # runs stuck after a crash (daemon, code server or run worker killed) are failed, then retried
        "run_monitoring": {
            "enabled": True,
            "start_timeout_seconds": RUN_START_TIMEOUT_S,
            "cancel_timeout_seconds": RUN_CANCEL_TIMEOUT_S,
            "max_runtime_seconds": RUN_MAX_RUNTIME_S,
            "max_resume_run_attempts": RUN_MAX_RESUME_ATTEMPTS,
            "poll_interval_seconds": RUN_MONITORING_POLL_S,
            "free_slots_after_run_end_seconds": RUN_FREE_SLOTS_AFTER_END_S,
        },
        # ~25 event-log rows per run and a run a minute: keep tick history bounded
        "retention": {
            "schedule": {"purge_after_days": 30},
            "sensor": {"purge_after_days": {"skipped": 1, "failure": 30, "success": 30}},
        },
    }
    if run_launcher is not None:
        config["run_launcher"] = dict(run_launcher)
    elif settings.dagster_run_launcher == "forking":
        config["run_launcher"] = forking_run_launcher(settings)
        if settings.run_workers_start == "daemon_start":
            config["run_coordinator"].update(PREFORKING_RUN_COORDINATOR)
    if settings.dagster_pg_url:
        url = settings.dagster_pg_url.get_secret_value()
        config["storage"] = {"postgres": {"postgres_db": postgres_db_config(url)}}
    else:
        config["storage"] = {"sqlite": {"base_dir": str(dagster_home(settings) / "storage")}}
    return config


def forking_run_launcher(settings: Settings) -> dict:
    """The forking launcher's block: its class, and when its forkserver starts."""
    return {**FORKING_RUN_LAUNCHER, "config": {FORKSERVER_START_KEY: settings.run_workers_start}}


#: The tag of a run of one stream shard (`dagster_project.defs.ingest.shards.SHARD_TAG`).
SHARD_TAG = "iot/shard"


def run_coordinator_config(settings: Settings) -> dict:
    """The queue's limits: runs at once, and with several shards runs at once per shard (a limit per value
    of the shard tag), so that one shard's backlog cannot take every slot."""
    config: dict = {"max_concurrent_runs": settings.max_concurrent_runs, "dequeue_interval_seconds": 1}
    if settings.stream_shards > 1:
        config["tag_concurrency_limits"] = [
            {"key": SHARD_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": settings.runs_per_shard}
        ]
    return config


def postgres_db_config(url: str) -> dict:
    """dagster-postgres's `postgres_db` block for `url`, with the psycopg2 driver and the password (if
    any) as a reference to PG_PASSWORD_ENV."""
    parts = urlsplit(url)
    if not parts.hostname or not parts.username:
        raise ValueError("IOT_DAGSTER_PG_URL needs a user and a host: postgresql://user[:password]@host/db")
    config: dict = {
        "username": unquote(parts.username),
        "hostname": parts.hostname,
        "port": parts.port or 5432,
        "db_name": unquote(parts.path.lstrip("/")) or "postgres",
        "scheme": PG_SCHEME,
    }
    if parts.password is not None:
        config["password"] = {"env": PG_PASSWORD_ENV}
    params = dict(parse_qsl(parts.query))
    if params:
        config["params"] = params
    return config


def dagster_env(settings: Settings) -> dict[str, str]:
    """What Dagster's processes need in their environment besides DAGSTER_HOME to open the instance."""
    env: dict[str, str] = {}
    if settings.dagster_pg_url:
        password = urlsplit(settings.dagster_pg_url.get_secret_value()).password
        if password is not None:
            env[PG_PASSWORD_ENV] = unquote(password)
    return env


def dagster_home(settings: Settings) -> Path:
    return settings.dagster_home.expanduser().resolve()


def write_instance_config(settings: Settings, run_launcher: Mapping[str, Any] | None = None) -> Path:
    home = dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    config = instance_config(settings, run_launcher)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return home


class RunLauncherFileError(UserFacingError):
    """A run launcher file that is not a `module`, `class` and `config` block its class accepts."""

    def __init__(self, what: str) -> None:
        super().__init__(what, "correct the file given to --run-launcher")


def load_run_launcher(path: Path) -> dict[str, Any]:
    """The run launcher block of `path` (YAML: `module`, `class`, optional `config`), its config checked
    against the launcher class's own schema, as the daemon checks it when it starts (the class is imported,
    not constructed). `{env: NAME}` values must be set where this runs, as they must where Dagster runs."""
    from dagster_project.dagster_internals import configurable_class_config

    block = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(block, dict) or not {"module", "class"} <= set(block) or set(block) - LAUNCHER_KEYS:
        raise RunLauncherFileError(f"{path}: a run launcher is `module`, `class` and `config` (a mapping)")
    config = block.get("config") or {}
    if not isinstance(config, dict):
        raise RunLauncherFileError(f"{path}: `config` is a mapping")
    try:
        configurable_class_config(block["module"], block["class"], config)
    except Exception as exc:  # an unknown module or class, or a config the class refuses
        errors = [e.message.split(" Expected:")[0] for e in getattr(exc, "errors", [])] or [str(exc)]
        what = " ".join("; ".join(errors).split())
        raise RunLauncherFileError(f"{path}: {block['module']}.{block['class']}: {what}") from exc
    return {"module": block["module"], "class": block["class"], "config": config}


def create_instance_storage(home: Path) -> None:
    """Open the instance once, which creates (or upgrades nothing of) its run, event-log and schedule storage.

    Dagster's daemon and webserver each create a missing storage when they start; started together on a fresh
    home they race on it (`alembic_version has more than one head`) and the code location then fails to
    load. Creating it here, before either starts, leaves them nothing to race on. The caller's environment
    must hold what `dagster_env` returns."""
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
        instance.all_instigator_state()


def create_instance_storage_apart(home: Path) -> None:
    """`create_instance_storage` in an interpreter of its own, which exits once the storage exists: the
    Dagster library it imports would otherwise stay in the memory of `iot-etl up` (about 100 MB) for as long
    as it runs. RuntimeError with the child's last line of output when it fails."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "iot_etl.dagster_instance", str(home)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise RuntimeError(f"Dagster's storage in {home}: {lines[-1] if lines else 'failed'}")


if __name__ == "__main__":
    import sys

    create_instance_storage(Path(sys.argv[1]))
