"""deploy/compose.docker-launcher.yaml on top of compose.yaml: runs in containers of their own, started by
Dagster's DockerRunLauncher. The merged file is valid Compose; the dagster.yaml its daemon and webserver write
(`iot-etl dagster-instance --run-launcher`) loads with Dagster's own schemas; a run's container gets the code
server's image, settings, secrets and certificate, on compose's network and volumes. Without the file the
forking launcher stays the default.

No Docker engine here: the files are read as `docker compose` reads them, the launcher is built from the
written dagster.yaml, and the container it would create is compared with compose's services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from dagster_docker import DockerRunLauncher

from dagster_project.dagster_internals import check_instance_config
from iot_core.errors import UserFacingError
from iot_core.settings import Settings
from iot_etl.dagster_instance import FORKING_RUN_LAUNCHER, instance_config, load_run_launcher
from tests.support.compose import COMPOSE, DOCKER_LAUNCHER, ROOT, env_of, load, mounts, resolved

LAUNCHER_FILE = ROOT / "deploy" / "docker-launcher" / "run_launcher.yaml"
MOUNTED = "/app/deploy-run-launcher.yaml"
SCHEMA = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
DAGSTER = ("dagster-webserver", "dagster-daemon")
#: compose's settings that only `iot-etl dagster-instance` and `up` read, not a run.
INSTANCE_ONLY = {"IOT_DAGSTER_HOME", "IOT_DAGSTER_PG_URL", "IOT_WEBSERVER_PORT"}


def services() -> dict[str, Any]:
    return resolved(DOCKER_LAUNCHER)["services"]


def launcher_config() -> dict[str, Any]:
    return load_run_launcher(LAUNCHER_FILE)["config"]


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(**{k[4:].lower(): v for k, v in env.items() if k.startswith("IOT_")})


def test_the_merged_file_is_valid_against_the_compose_specification() -> None:
    validator = jsonschema.Draft7Validator(SCHEMA)
    assert list(validator.iter_errors(load(DOCKER_LAUNCHER))) == []
    assert [e.message for e in validator.iter_errors(resolved(DOCKER_LAUNCHER))] == []


def test_webserver_and_daemon_write_the_instance_with_the_docker_launcher() -> None:
    merged = services()
    for name in DAGSTER:
        service = merged[name]
        command = service["command"][-1]
        assert command.startswith(f"iot-etl dagster-instance --run-launcher {MOUNTED} && exec ")
        assert mounts(service)[MOUNTED] == "./deploy/docker-launcher/run_launcher.yaml:ro"
        # what compose.yaml mounts stays (Dagster's home, the workspace, the publisher's certificate)
        assert {"/dagster_home", "/app/deploy-workspace.yaml", "/pki"} <= set(mounts(service))
        assert mounts(service)["/var/run/docker.sock"] == "/var/run/docker.sock"
        assert service["group_add"] == ["998"]
    for name, service in merged.items():
        if name not in DAGSTER:
            assert "/var/run/docker.sock" not in mounts(service), f"{name}: no Docker engine for it"
    base = resolved()["services"]
    for name in DAGSTER:  # the single-machine default: compose.yaml alone keeps the forking launcher
        assert "--run-launcher" not in json.dumps(base[name]["command"])
    default = instance_config(settings_of(env_of(base["dagster-daemon"])))
    assert {k: default["run_launcher"][k] for k in ("module", "class")} == FORKING_RUN_LAUNCHER


def test_the_instance_the_daemon_writes_loads_with_dagsters_own_schemas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = env_of(services()["dagster-daemon"])
    config = instance_config(settings_of(env), load_run_launcher(LAUNCHER_FILE))
    assert config["run_launcher"]["class"] == "DockerRunLauncher"
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", env["DAGSTER_PG_PASSWORD"])
    processed = check_instance_config(tmp_path)
    assert processed["storage"]["postgres_db"]["hostname"] == "timescaledb"
    launcher = DockerRunLauncher.from_config_value(None, processed["run_launcher"])
    assert launcher.networks == ["iot-etl_default"] and launcher.image is None


def test_a_runs_container_gets_the_code_servers_image_settings_secrets_and_certificate() -> None:
    merged = services()
    code_server, daemon = env_of(merged["code-server"]), env_of(merged["dagster-daemon"])
    config = launcher_config()
    # the image: the one the code server reports, which is the one compose builds for Dagster's services
    images = {merged[name]["image"] for name in ("code-server", *DAGSTER)}
    assert images == {code_server["DAGSTER_CURRENT_IMAGE"]} and all("build" in merged[n] for n in DAGSTER)
    # settings and secrets: copied from the daemon's environment, which holds the code server's values
    names = set(config["env_vars"])
    assert all("=" not in name for name in names), "values come from the environment, not the file"
    assert names == {k for k in code_server if k.startswith("IOT_")} - INSTANCE_ONLY | {"DAGSTER_PG_PASSWORD"}
    for name in names:
        assert daemon[name] == code_server.get(name, daemon[name]), name
    # compose's network and volumes, as compose names them for its project
    project = load(COMPOSE)["name"]
    assert config["network"] == f"{project}_default"
    code_server_mounts = mounts(merged["code-server"]) | mounts(merged["dagster-daemon"])
    for volume in config["container_kwargs"]["volumes"]:
        source, target, *mode = volume.split(":")
        assert source.removeprefix(f"{project}_") in load(COMPOSE)["volumes"], volume
        assert code_server_mounts[target] == ":".join([source.removeprefix(f"{project}_"), *mode]), volume
    assert config["container_kwargs"]["auto_remove"] is True
    assert config["container_kwargs"]["cap_drop"] == ["ALL"]


def test_the_override_reads_no_password_and_needs_the_docker_group() -> None:
    text = DOCKER_LAUNCHER.read_text() + LAUNCHER_FILE.read_text()
    assert "PASSWORD" not in text.replace("DAGSTER_PG_PASSWORD", "")
    assert "${DOCKER_GID:?" in DOCKER_LAUNCHER.read_text()


def test_iot_etl_writes_the_launcher_given_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "IOT_DAGSTER_HOME": str(tmp_path / "home"),
        "IOT_DAGSTER_PG_URL": "postgresql://dagster:pw@timescaledb:5432/dagster",
    }
    command = [sys.executable, "-m", "iot_etl.cli", "dagster-instance", "--run-launcher"]
    done = subprocess.run(
        [*command, str(LAUNCHER_FILE)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    written = yaml.safe_load((tmp_path / "home" / "dagster.yaml").read_text())
    assert written["run_launcher"] == load_run_launcher(LAUNCHER_FILE)
    assert "pw" not in (tmp_path / "home" / "dagster.yaml").read_text()
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({**load_run_launcher(LAUNCHER_FILE), "config": {"networkz": "x"}}))
    refused = subprocess.run([*command, str(wrong)], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    [line] = refused.stderr.strip().splitlines()
    assert "networkz" in line and "--run-launcher" in line


def test_a_launcher_file_is_a_module_class_and_config() -> None:
    with pytest.raises(UserFacingError, match="module"):
        load_run_launcher(COMPOSE)
