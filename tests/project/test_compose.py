"""compose.yaml as `docker compose` reads it: valid against the Compose Specification, settings that exist,
no password in the file, a start order that only waits on health checks that exist, and the secure setup:
no anonymous broker, least-privilege Redis and PostgreSQL users, ports on 127.0.0.1 only.

No Docker engine here: the file is parsed with the example .env, and what the `certs` service generates is
rendered by running its script (deploy/certs.sh) with the environment compose gives it, then served by a
real Mosquitto and Redis with the health checks compose runs."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import psycopg
import pytest
import yaml

from iot_core.settings import Settings
from iot_etl.dagster_instance import instance_config
from tests.support import PrivateRedis, free_port
from tests.support.compose import (
    COMPOSE,
    DOCKER_LAUNCHER,
    PASSWORDS,
    ROOT,
    MissingVariable,
    env_of,
    example_env,
    interpolate,
    load,
    mounts,
    read_env_file,
    resolve,
    resolved,
    user_of,
    variables,
)
from tests.support.postgres_server import PrivatePostgres
from tests.support.private_server import ProcessServer
from tests.support.processes import descendants, kill_all
from tests.support.waiting import wait_until

CERTS_SCRIPT = ROOT / "deploy" / "certs.sh"
SCHEMA = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
#: Services that connect to MQTT, and the service certificate (role) each connects with.
MQTT_CLIENTS = {
    "listener": "listener",
    "code-server": "publisher",
    "dagster-webserver": "publisher",
    "dagster-daemon": "publisher",
    "simulator": "simulator",
}
DAGSTER = ("code-server", "dagster-webserver", "dagster-daemon")


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
        env = {k: v for k, v in env_of(service).items() if k.startswith("IOT_")}
        for key in env:
            assert key[4:].lower() in Settings.model_fields, f"{name}: {key} is not a setting"
        seen |= set(env)
        if env:
            Settings(**{k[4:].lower(): v for k, v in env.items()})  # the values parse
    assert {
        "IOT_DATABASE_URL",
        "IOT_DATABASE_OWNER_URL",
        "IOT_DATABASE_READER_URL",
        "IOT_DAGSTER_PG_URL",
        "IOT_REDIS_URL",
        "IOT_LISTENER_REDIS_URL",
        "IOT_SECURITY",
    } <= seen


def test_one_listener_with_plain_subscriptions_and_its_append_only_redis_user() -> None:
    services = resolved()["services"]
    listeners = [name for name in services if name.startswith("listener")]
    assert listeners == ["listener"], "no shared-subscription replicas: a device could join their group"
    env = env_of(services["listener"])
    topics = Settings(
        **({"listener_topics": env["IOT_LISTENER_TOPICS"]} if "IOT_LISTENER_TOPICS" in env else {})
    )
    assert not any(t.startswith("$share/") for t in topics.listener_topics)
    assert "IOT_REDIS_URL" not in env and "IOT_DATABASE_URL" not in env, "the listener only appends to Redis"
    assert user_of(env["IOT_LISTENER_REDIS_URL"]) == "iot-listener"
    assert "ports" not in services["listener"]
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "iot-listener")
    assert job["static_configs"] == [{"targets": [f"listener:{env['IOT_LISTENER_METRICS_PORT']}"]}]


def test_redis_users_differ_and_the_health_check_keeps_its_password_off_the_command_line() -> None:
    services = resolved()["services"]
    listener_url = env_of(services["listener"])["IOT_LISTENER_REDIS_URL"]
    pipeline_urls = {env_of(services[n])["IOT_REDIS_URL"] for n in DAGSTER}
    assert len(pipeline_urls) == 1
    (pipeline_url,) = pipeline_urls
    assert user_of(pipeline_url) != user_of(listener_url)
    for name, service in services.items():  # nobody else holds the listener's URL, the listener no other
        env = env_of(service)
        if name not in ("listener", "certs", "crl"):
            assert "IOT_LISTENER_REDIS_URL" not in env, name
        if "IOT_REDIS_URL" in env:
            assert env["IOT_REDIS_URL"] == pipeline_url, name
    certs = env_of(services["certs"])  # the ACL file is made from the same two URLs
    assert (certs["IOT_REDIS_URL"], certs["IOT_LISTENER_REDIS_URL"]) == (pipeline_url, listener_url)
    redis = services["redis"]
    assert redis["command"][redis["command"].index("--aclfile") + 1] == "/redis-acl/users.acl"
    assert (
        mounts(redis)["/redis-acl"] == "redisacl:ro" and mounts(services["certs"])["/redis-acl"] == "redisacl"
    )
    check = " ".join(redis["healthcheck"]["test"])
    assert f"--user {user_of(listener_url)}" in check
    assert env_of(redis)["REDISCLI_AUTH"] == urlsplit(listener_url).password
    assert not any(p in check for p in PASSWORDS.values())


def test_postgresql_roles_owner_for_migrate_writer_for_the_pipeline_reader_for_grafana() -> None:
    services = resolved()["services"]
    migrate = env_of(services["migrate"])
    owner, writer, reader = (
        migrate["IOT_DATABASE_OWNER_URL"],
        migrate["IOT_DATABASE_URL"],
        migrate["IOT_DATABASE_READER_URL"],
    )
    assert user_of(owner) == env_of(services["timescaledb"])["POSTGRES_USER"]
    assert urlsplit(owner).password == PASSWORDS["POSTGRES_PASSWORD"]
    assert (
        len({user_of(owner), user_of(writer), user_of(reader), user_of(migrate["IOT_DAGSTER_PG_URL"])}) == 4
    )
    for name, service in services.items():
        env = env_of(service)
        if "IOT_DATABASE_URL" in env:
            assert env["IOT_DATABASE_URL"] == writer, name
        if "IOT_DATABASE_OWNER_URL" in env:  # migrate, and compaction/retention in Dagster
            assert name in ("migrate", *DAGSTER) and env["IOT_DATABASE_OWNER_URL"] == owner, name
        assert "IOT_DATABASE_READER_URL" not in env or name == "migrate", name
    for name in ("listener", "simulator", "certs", "crl"):
        assert not any("DATABASE" in k for k in env_of(services[name])), name
    grafana = env_of(services["grafana"])
    assert (grafana["GRAFANA_DB_USER"], grafana["GRAFANA_DB_PASSWORD"]) == (
        user_of(reader),
        urlsplit(reader).password,
    )
    dagster_url = migrate["IOT_DAGSTER_PG_URL"]  # migrate closes Dagster's database to the other roles
    assert all(env_of(services[n])["IOT_DAGSTER_PG_URL"] == dagster_url for n in DAGSTER)


def test_no_pg_read_all_data_and_no_anonymous_broker_in_any_deploy_file() -> None:
    files = [
        COMPOSE,
        ROOT / ".env.example",
        ROOT / "Dockerfile",
        *(p for p in (ROOT / "deploy").rglob("*") if p.is_file()),
    ]
    for path in files:
        text = path.read_text()
        assert "pg_read_all_data" not in text, path
        assert not re.search(r"^\s*allow_anonymous\s+true", text, re.M), path
    assert not (ROOT / "deploy" / "mosquitto.conf").exists(), "the broker's configuration is generated (TLS)"


def test_the_broker_runs_the_tls_configuration_the_certs_service_writes() -> None:
    services = resolved()["services"]
    mosquitto, certs = services["mosquitto"], services["certs"]
    assert mounts(mosquitto)["/broker"] == "broker:ro" and mounts(certs)["/broker"] == "broker"
    assert "/usr/sbin/mosquitto -c /broker/mosquitto.conf" in mosquitto["command"][-1]
    assert not any(t.startswith("/mosquitto/config") for t in mounts(mosquitto)), "the image's default config"
    script = CERTS_SCRIPT.read_text()
    assert re.search(r"^\s*iot-etl broker-config --tls --all-interfaces .*--out \"\$BROKER\"$", script, re.M)
    assert certs["command"] == ["sh", "/app/deploy-certs.sh", "setup"]
    assert mounts(certs)["/app/deploy-certs.sh"] == "./deploy/certs.sh:ro"
    for name in ("mosquitto", "redis"):
        assert services[name]["depends_on"]["certs"] == {"condition": "service_completed_successfully"}
    assert certs.get("restart") == "no" and certs["user"] == "0"


def test_ports_device_listener_on_localhost_service_listener_internal_nothing_on_1883() -> None:
    services = resolved()["services"]
    published: list[tuple[str, str]] = []
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"
            published.append((name, str(port)))
    assert not any(p.endswith(":1883") or ":1883:" in p for _, p in published), published
    assert not any(p.endswith(":8884") for _, p in published), "the service listener is never published"
    mosquitto = services["mosquitto"]
    assert mosquitto["ports"] == ["127.0.0.1:8883:8883"] and mosquitto["expose"] == ["8884"]
    assert services["dagster-webserver"]["ports"] == ["127.0.0.1:3000:3000"]


def test_every_mqtt_client_uses_tls_with_its_own_certificate_volume() -> None:
    services = resolved()["services"]
    mosquitto = services["mosquitto"]
    certs_mounts = mounts(services["certs"])
    script = CERTS_SCRIPT.read_text()
    for name, role in MQTT_CLIENTS.items():
        service = services[name]
        env = env_of(service)
        assert env["IOT_SECURITY"] == "true" and env["IOT_PKI_DIR"] == "/pki", name
        assert env["IOT_MQTT_HOST"] == env["IOT_MQTT_SERVICE_HOST"] == "mosquitto", name
        assert f"127.0.0.1:{env['IOT_MQTT_TLS_PORT']}:{env['IOT_MQTT_TLS_PORT']}" in mosquitto["ports"], name
        assert [env["IOT_MQTT_SERVICE_PORT"]] == mosquitto["expose"], name
        volume, _, mode = mounts(service)["/pki"].partition(":")
        assert mode == "ro" and volume != "pki", f"{name}: its own certificate only, read-only, never the CAs"
        folder = next(t for t, s in certs_mounts.items() if s == volume).removeprefix("/clients/")
        assert f"bundle {folder} {role}\n" in script, f"{name}: certs gives {folder} the {role} certificate"
        assert service["depends_on"]["mosquitto"] == {"condition": "service_healthy"}, name
    holders = {n for n, s in services.items() if any(v.split(":")[0] == "pki" for v in s.get("volumes", []))}
    assert holders == {"certs", "crl"}, "only these two see the CAs' keys"


def test_the_dagster_ui_stays_on_localhost_and_the_proxy_profile_asks_for_a_password() -> None:
    raw = load(COMPOSE)["services"]["proxy"]
    assert raw["ports"] == ["${PROXY_BIND:-127.0.0.1}:${PROXY_PORT:-8080}:8080"]
    assert raw["profiles"] == ["proxy"]
    proxy = resolved()["services"]["proxy"]
    caddyfile = (ROOT / "deploy" / "proxy" / "Caddyfile").read_text()
    assert mounts(proxy)["/etc/caddy/Caddyfile"] == "./deploy/proxy/Caddyfile:ro"
    assert re.search(r"basic_auth \{\s*\{\$PROXY_USER\} \{\$PROXY_PASSWORD_HASH\}\s*\}", caddyfile)
    assert "reverse_proxy dagster-webserver:3000" in caddyfile
    assert set(env_of(proxy)) == {"PROXY_USER", "PROXY_PASSWORD_HASH"}


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
            if "PASSWORD" in key and not key.endswith("_HASH"):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), key
    for name, service in resolved()["services"].items():  # never on a command line
        argv = json.dumps([service.get("command"), service.get("entrypoint"), service.get("healthcheck")])
        assert not any(secret in argv for secret in PASSWORDS.values()), name
    url = resolved()["services"]["migrate"]["environment"]["IOT_DATABASE_OWNER_URL"]
    assert url == "postgresql://iot:pg-secret_1@timescaledb:5432/iot"


def test_env_example_names_every_variable_the_file_reads_and_leaves_passwords_empty() -> None:
    example = read_env_file(ROOT / ".env.example")
    read = variables(json.dumps(load(COMPOSE))) | variables(json.dumps(load(DOCKER_LAUNCHER)))
    assert read == set(example)
    assert example["DOCKER_GID"] == "", "the host's own: `stat -c %g /var/run/docker.sock`"
    assert all(example[p] == "" for p in PASSWORDS)
    assert example["PROXY_PASSWORD_HASH"] == "" and example["PROXY_BIND"] == "127.0.0.1"
    assert not any(k.startswith("IOT_") for k in example), "Settings would read them from .env too"
    with pytest.raises(MissingVariable):
        resolve(load(COMPOSE), example)


def test_services_start_in_order_on_health_checks_that_exist() -> None:
    services = resolved()["services"]
    one_shot = {"certs", "migrate", "simulator"}
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
    assert order.index("certs") < order.index("mosquitto") < order.index("listener")
    assert order.index("certs") < order.index("redis") < order.index("listener")
    assert order.index("timescaledb") < order.index("migrate") < order.index("dagster-daemon")
    assert order.index("listener") < order.index("prometheus") < order.index("grafana")
    assert services["simulator"]["profiles"] == ["demo"]


def test_images_are_pinned_and_timescaledb_is_current() -> None:
    services = resolved()["services"]
    for name, service in services.items():
        assert "build" in service or re.fullmatch(r"[\w./-]+:[\w.-]+", service["image"]), name
        assert not str(service.get("image", "")).endswith(":latest"), name
    assert re.fullmatch(r"timescale/timescaledb:2\.2\d\.\d+-pg17", services["timescaledb"]["image"])


def test_dagster_uses_its_postgresql_storage() -> None:
    services = resolved()["services"]
    for name in ("dagster-webserver", "dagster-daemon"):
        env = env_of(services[name])
        assert env["IOT_DAGSTER_PG_URL"].endswith("@timescaledb:5432/dagster")
        assert env["DAGSTER_PG_PASSWORD"] == urlsplit(env["IOT_DAGSTER_PG_URL"]).password
        config = instance_config(Settings(dagster_pg_url=env["IOT_DAGSTER_PG_URL"]))
        assert "postgres" in config["storage"]


def test_mounted_files_exist_and_are_the_projects() -> None:
    services = resolved()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]
    named = {v.split(":", 1)[0] for s in services.values() for v in s.get("volumes", []) if v[0] not in "./"}
    assert named == set(load(COMPOSE)["volumes"])


def test_grafana_gets_every_variable_its_provisioning_reads() -> None:
    grafana = resolved()["services"]["grafana"]
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    needed: set[str] = set()
    for path in provisioning.rglob("*.yaml"):
        needed |= variables(path.read_text())
    assert needed == {"GRAFANA_DB_USER", "GRAFANA_DB_PASSWORD"}
    assert needed <= set(grafana["environment"])
    assert grafana["environment"]["GRAFANA_DB_PASSWORD"] == PASSWORDS["GRAFANA_DB_PASSWORD"]
    datasource = yaml.safe_load((provisioning / "datasources" / "datasources.yaml").read_text())
    [postgres] = [d for d in datasource["datasources"] if d["type"] == "grafana-postgresql-datasource"]
    assert interpolate(postgres["user"], grafana["environment"]) == "grafana_reader"


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


def test_the_images_users_are_the_ones_the_certs_script_hands_files_to() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    script = CERTS_SCRIPT.read_text()
    app_uid = re.search(r"useradd --create-home --uid (\d+) iot", dockerfile)
    assert app_uid and f"APP_UID={app_uid[1]}" in script
    assert "groupadd --system --gid 1883 mosquitto" in dockerfile and "--uid 1883 --gid 1883" in dockerfile
    assert "REDIS_UID=999" in script and "umask 077" in script


# --- what the certs service generates, served by real servers ----------------------------------------------


class RenderedBroker(ProcessServer):
    """Mosquitto started the way compose's `mosquitto` service starts it (its shell wrapper included)."""

    name = "mosquitto"

    def __init__(self) -> None:
        super().__init__(host="127.0.0.1", port=None, log_name="mosquitto.log")
        self.service_port = free_port("127.0.0.1")
        self.workdir.chmod(0o711)  # as root, the broker reads its files as the mosquitto user
        self.broker_dir = self.workdir / "broker"
        self.command: list[str] = []

    def start(self, timeout: float = 10.0) -> RenderedBroker:
        self._spawn(self.command, timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        process = self._take_process()
        if process is not None:
            left = descendants(process.pid)  # the wrapper's SIGHUP loop: a container's end would take it
            self._terminate(process, timeout)
            kill_all(left)
            assert process.returncode == 0, f"the wrapper passes on the broker's exit: {process.returncode}"


def in_container(argv: list[str], broker_dir: Path) -> list[str]:
    return [a.replace("/broker/", f"{broker_dir}/") for a in argv]


def run_certs(mode: str, env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(CERTS_SCRIPT), mode], env=env, capture_output=True, text=True, timeout=180, **kwargs
    )


@pytest.fixture
def rendered(tmp_path: Path) -> Iterator[tuple[RenderedBroker, dict[str, str]]]:
    """deploy/certs.sh setup, run with the environment compose gives the `certs` service (paths moved into a
    temporary directory; `chown` recorded instead of done, so the test needs no root)."""
    broker = RenderedBroker()
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "chown").write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> "$CHOWN_LOG"\n')
    (shim / "chown").chmod(0o755)
    work = broker.workdir
    env = {
        **env_of(resolved()["services"]["certs"]),
        "IOT_PKI_DIR": str(work / "pki"),
        "BROKER_DIR": str(broker.broker_dir),
        "BROKER_DATA_DIR": str(work / "data"),
        "REDIS_ACL_DIR": str(work / "redis-acl"),
        "CLIENTS_DIR": str(work / "clients"),
        "CHOWN_LOG": str(tmp_path / "chown.log"),
        "PATH": f"{shim}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
    }
    try:
        yield broker, env
    finally:
        broker.close()


def test_the_certs_service_renders_a_tls_only_broker_and_redis_users_that_the_health_checks_pass(
    rendered: tuple[RenderedBroker, dict[str, str]],
) -> None:
    broker, env = rendered
    services = resolved()["services"]
    first = run_certs("setup", env)
    assert first.returncode == 0, first.stderr
    conf = (broker.broker_dir / "mosquitto.conf").read_text()
    listeners = re.findall(r"^listener (\d+) (\S+)$", conf, re.M)
    assert listeners == [("8883", "0.0.0.0"), ("8884", "mosquitto")], "devices on every interface, services"
    blocks = conf.split("\nlistener ")[1:]
    for block in blocks:  # no plaintext listener, no anonymous client
        assert "require_certificate true" in block and "allow_anonymous false" in block and "cafile " in block
    assert "allow_anonymous true" not in conf and "retain_available false" in conf
    assert "max_queued_messages 0" in conf, "no 1000-message queue limit"
    for secret in PASSWORDS.values():
        assert secret not in first.stdout + first.stderr
    acl = (broker.workdir / "redis-acl" / "users.acl").read_text()
    assert acl.startswith("user default off") and not any(p in acl for p in PASSWORDS.values())
    chowns = (Path(env["CHOWN_LOG"])).read_text().splitlines()
    assert f"-R 999:999 {broker.workdir}/redis-acl" in chowns
    for folder, role in (("listener", "listener"), ("dagster", "publisher"), ("simulator", "simulator")):
        bundle = broker.workdir / "clients" / folder
        assert f"-R 10001:10001 {bundle}" in chowns
        assert sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*.*")) == [
            "ca-chain.pem",
            f"services/{role}.key",
            f"services/{role}.pem",
        ]
    issued = json.loads((broker.workdir / "pki" / "index.json").read_text())["certs"]

    # again, as `docker compose up` does at every start, on ports of this test: nothing is issued anew
    env |= {
        "IOT_MQTT_TLS_PORT": str(broker.port),
        "IOT_MQTT_SERVICE_PORT": str(broker.service_port),
        "IOT_MQTT_SERVICE_HOST": "127.0.0.1",
    }
    again = run_certs("setup", env)
    assert again.returncode == 0, again.stderr
    assert json.loads((broker.workdir / "pki" / "index.json").read_text())["certs"] == issued

    script = services["mosquitto"]["command"][-1]
    broker.command = ["sh", "-c", script.replace("/broker/", f"{broker.broker_dir}/")]
    broker.start()
    try:
        check = in_container(services["mosquitto"]["healthcheck"]["test"][1:], broker.broker_dir)
        check[check.index("-h") + 1] = "127.0.0.1"  # `mosquitto` on the compose network
        check[check.index("-p") + 1] = str(broker.service_port)
        assert subprocess.run(check, capture_output=True, timeout=30).returncode == 0, broker.log_text()
        no_cert = [
            a
            for i, a in enumerate(check)
            if a not in ("--cert", "--key") and check[i - 1] not in ("--cert", "--key")
        ]
        assert subprocess.run(no_cert, capture_output=True, timeout=30).returncode != 0
        plain = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", "#", "-E", "-W", "5"]
        assert subprocess.run(plain, capture_output=True, timeout=30).returncode != 0
    finally:
        broker.stop()

    redis_check = services["redis"]["healthcheck"]["test"][1]
    with PrivateRedis(aclfile=broker.workdir / "redis-acl" / "users.acl") as redis:
        command = redis_check.replace("redis-cli", f"redis-cli -p {redis.port}")
        ok = subprocess.run(
            ["sh", "-c", command], env={**os.environ, **env_of(services["redis"])}, timeout=30
        )
        assert ok.returncode == 0
        wrong = subprocess.run(
            ["sh", "-c", command], env={**os.environ, "REDISCLI_AUTH": "wrong"}, timeout=30
        )
        assert wrong.returncode != 0


def test_the_crl_service_re_signs_the_list_and_stops_on_sigterm(
    rendered: tuple[RenderedBroker, dict[str, str]],
) -> None:
    broker, env = rendered
    assert run_certs("setup", env).returncode == 0
    crl = broker.broker_dir / "crl.pem"
    before = crl.read_bytes()
    process = subprocess.Popen(
        ["sh", str(CERTS_SCRIPT), "crl"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    left: set[int] = set()
    try:
        assert wait_until(lambda: crl.read_bytes() != before, timeout_s=120), (
            "the broker's copy was re-signed"
        )
        left = descendants(process.pid)  # its `sleep`: a container's end would take it
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        kill_all(left)


def test_the_database_init_script_makes_dagsters_role_and_closes_its_database() -> None:
    script = ROOT / "deploy" / "timescaledb" / "init.sh"
    text = script.read_text()
    assert text.count("DAGSTER_DB_PASSWORD") == 1 and "\\getenv dagster_password DAGSTER_DB_PASSWORD" in text
    with PrivatePostgres() as pg:
        env = {
            **os.environ,
            "POSTGRES_USER": "postgres",
            "POSTGRES_DB": "postgres",
            "PGHOST": pg.host,
            "PGPORT": str(pg.port),
            "DAGSTER_DB_PASSWORD": PASSWORDS["DAGSTER_DB_PASSWORD"],
        }
        result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("CREATE ROLE someone LOGIN")
            row = conn.execute(
                "SELECT r.rolpassword LIKE 'SCRAM-SHA-256$%', r.rolsuper, pg_get_userbyid(d.datdba),"
                " has_database_privilege('someone', 'dagster', 'CONNECT'),"
                " has_database_privilege('dagster', 'dagster', 'CONNECT')"
                " FROM pg_authid r, pg_database d WHERE r.rolname = 'dagster' AND d.datname = 'dagster'"
            ).fetchone()
        assert row == (True, False, "dagster", False, True)
