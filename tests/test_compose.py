"""compose.yaml as `docker compose` reads it: valid against the Compose Specification, settings that exist,
no password in the file, a start order that only waits on health checks that exist."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from iot_core.settings import DEFAULT_TOPICS, Settings
from iot_etl.dagster_instance import instance_config
from tests.support.compose import MissingVariable, interpolate, load, read_env_file, resolve, variables

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
SCHEMA = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
PASSWORDS = {
    "POSTGRES_PASSWORD": "pg-secret_1",
    "GRAFANA_DB_PASSWORD": "gr-secret_2",
    "GRAFANA_ADMIN_PASSWORD": "x3",
}


def example_env() -> dict[str, str]:
    """.env.example with the passwords a user is asked to fill in."""
    return {**read_env_file(ROOT / ".env.example"), **PASSWORDS}


def resolved() -> dict[str, Any]:
    return resolve(load(COMPOSE), example_env())


def schema_errors(document: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    assert schema_errors(load(COMPOSE)) == []
    assert schema_errors(resolved()) == []


def test_the_schema_check_catches_mistakes() -> None:
    broken = copy.deepcopy(load(COMPOSE))
    broken["services"]["migrate"]["depends_on"]["timescaledb"]["condition"] = "service_happy"
    broken["services"]["redis"]["healthcheck"]["interval_s"] = 5
    errors = schema_errors(broken)
    assert any("service_happy" in e for e in errors) and any("interval_s" in e for e in errors), errors


def test_every_iot_variable_passed_is_a_setting_and_parses() -> None:
    services = resolved()["services"]
    seen: set[str] = set()
    for name, service in services.items():
        env = {k: v for k, v in (service.get("environment") or {}).items() if k.startswith("IOT_")}
        for key in env:
            assert key[4:].lower() in Settings.model_fields, f"{name}: {key} is not a setting"
        seen |= set(env)
        if env:
            Settings(**{k[4:].lower(): v for k, v in env.items()})  # the values parse
    assert {"IOT_DATABASE_URL", "IOT_DAGSTER_PG_URL", "IOT_LISTENER_TOPICS"} <= seen


def listener_services(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if re.fullmatch(r"listener-\d+", name)}


def test_listener_replicas_share_one_subscription_of_every_default_topic_with_ids_of_their_own() -> None:
    services = resolved()["services"]
    replicas = listener_services(services)
    assert len(replicas) >= 2
    client_ids = {s["environment"]["IOT_LISTENER_CLIENT_ID"] for s in replicas.values()}
    assert len(client_ids) == len(replicas), "each replica keeps a broker session of its own"
    for name, service in replicas.items():
        env = service["environment"]
        assert env["IOT_LISTENER_CLIENT_ID"].endswith(name.rsplit("-", 1)[1])
        topics = Settings(listener_topics=env["IOT_LISTENER_TOPICS"]).listener_topics
        groups = {t.split("/")[1] for t in topics}
        assert all(t.startswith("$share/") for t in topics) and len(groups) == 1
        assert sorted(t.split("/", 2)[2] for t in topics) == sorted(DEFAULT_TOPICS)
        assert "ports" not in service, f"{name}: replicas need no published port"
    assert len({s["environment"]["IOT_LISTENER_TOPICS"] for s in replicas.values()}) == 1


def test_no_password_is_written_in_the_file() -> None:
    text = COMPOSE.read_text()
    for secret in PASSWORDS.values():
        assert secret not in text
    for password in PASSWORDS:
        env = example_env()
        del env[password]
        with pytest.raises(MissingVariable, match=password):
            resolve(load(COMPOSE), env)
    for service in load(COMPOSE)["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key:
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), key
    url = resolved()["services"]["migrate"]["environment"]["IOT_DATABASE_URL"]
    assert url == "postgresql://iot:pg-secret_1@timescaledb:5432/iot"


def test_env_example_names_every_variable_the_file_reads_and_leaves_passwords_empty() -> None:
    example = read_env_file(ROOT / ".env.example")
    assert variables(json.dumps(load(COMPOSE))) == set(example)
    assert all(example[p] == "" for p in PASSWORDS)
    with pytest.raises(MissingVariable):
        resolve(load(COMPOSE), example)


def test_services_start_in_order_on_health_checks_that_exist() -> None:
    services = resolved()["services"]
    one_shot = {"migrate", "simulator"}
    for name, service in services.items():
        if name not in one_shot:
            assert "healthcheck" in service, f"{name} has no health check"
            assert service.get("restart") == "unless-stopped", name
        for dep, how in (service.get("depends_on") or {}).items():
            condition = how["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s missing health check"
            elif condition == "service_completed_successfully":
                assert dep in one_shot, f"{name} waits for {dep} to exit"
    order: list[str] = []
    pending = dict(services)
    while pending:  # a topological order exists: no cycles
        ready = [n for n, s in pending.items() if set(s.get("depends_on") or {}) <= set(order)]
        assert ready, f"dependency cycle among {sorted(pending)}"
        order.extend(sorted(ready))
        for n in ready:
            del pending[n]
    assert order.index("timescaledb") < order.index("migrate") < order.index("dagster-daemon")
    assert order.index("listener-2") < order.index("prometheus") < order.index("grafana")
    assert services["simulator"]["profiles"] == ["demo"]


def test_images_are_pinned_and_timescaledb_is_current() -> None:
    services = resolved()["services"]
    for name, service in services.items():
        assert "build" in service or re.fullmatch(r"[\w./-]+:[\w.-]+", service["image"]), name
        assert not str(service.get("image", "")).endswith(":latest"), name
    assert re.fullmatch(r"timescale/timescaledb:2\.2\d\.\d+-pg17", services["timescaledb"]["image"])


def test_published_ports_bind_to_localhost() -> None:
    for name, service in resolved()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_dagster_uses_its_postgresql_storage() -> None:
    services = resolved()["services"]
    for name in ("dagster-webserver", "dagster-daemon"):
        env = services[name]["environment"]
        assert env["IOT_DAGSTER_PG_URL"].endswith("@timescaledb:5432/dagster")
        config = instance_config(Settings(dagster_pg_url=env["IOT_DAGSTER_PG_URL"]))
        assert "postgres" in config["storage"]
    init = (ROOT / "deploy" / "timescaledb" / "init.sh").read_text()
    assert "CREATE DATABASE dagster;" in init


def test_mounted_files_exist_and_are_the_projects() -> None:
    services = resolved()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"
    assert "./deploy/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro" in services["mosquitto"]["volumes"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    listener_job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "iot-listener")
    targets = {
        f"{name}:{int(s['environment']['IOT_LISTENER_METRICS_PORT'])}"
        for name, s in listener_services(services).items()
    }
    assert listener_job["static_configs"] == [{"targets": sorted(targets)}], (
        "Prometheus scrapes every replica"
    )


def test_grafana_gets_every_variable_its_provisioning_reads() -> None:
    grafana = resolved()["services"]["grafana"]
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    needed: set[str] = set()
    for path in provisioning.rglob("*.yaml"):
        needed |= variables(path.read_text())
    assert needed == {"GRAFANA_DB_USER", "GRAFANA_DB_PASSWORD"}
    assert needed <= set(grafana["environment"])
    assert grafana["environment"]["GRAFANA_DB_PASSWORD"] == PASSWORDS["GRAFANA_DB_PASSWORD"]
    assert interpolate("${GRAFANA_DB_USER}", grafana["environment"]) in (
        (ROOT / "deploy" / "timescaledb" / "init.sh").read_text()
    )


def test_webserver_and_daemon_share_the_code_server_service() -> None:
    services = resolved()["services"]
    workspace = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())
    [entry] = [e["grpc_server"] for e in workspace["load_from"]]
    assert entry["host"] in services and entry["location_name"] == "iot_pipeline"
    command = services[entry["host"]]["command"]
    assert command[command.index("--port") + 1] == str(entry["port"])
    for name in ("dagster-webserver", "dagster-daemon"):
        service = services[name]
        assert "./deploy/workspace.yaml:/app/deploy-workspace.yaml:ro" in service["volumes"], name
        assert "-w /app/deploy-workspace.yaml" in " ".join(service["command"]), name
        assert service["depends_on"][entry["host"]] == {"condition": "service_healthy"}, name
