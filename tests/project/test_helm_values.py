"""deploy/helm/values.yaml for Dagster's Helm chart: the instance the chart renders from it loads with
Dagster's own schemas (the instance's, K8sRunLauncher's, the PostgreSQL storage's), a run's Kubernetes Job
as K8sRunLauncher builds it carries the code location's settings, secrets and certificate, and both agree
with compose.yaml: the same IOT_* settings, the same roles, secrets only in Secrets.

No Kubernetes and no `helm` here: tests/support/helm_chart.py renders what the chart's templates make of
these values; dagster_k8s builds the Job it would submit."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from dagster import DagsterInvalidConfigError, DagsterRun
from dagster_k8s import K8sRunLauncher, construct_dagster_k8s_job
from dagster_k8s.job import get_job_name_from_run_id

from dagster_project.dagster_internals import check_instance_config, configurable_class_config
from iot_core.settings import Settings
from iot_etl.dagster_instance import RUN_MAX_RUNTIME_S, instance_config, postgres_db_config
from tests.support.compose import PASSWORDS, ROOT, env_of, read_env_file, resolved, user_of
from tests.support.helm_chart import (
    CHART_KEYS,
    code_server_container_context,
    code_server_env,
    image_name,
    instance_yaml,
)
from tests.support.retrying_job import retrying_job

HELM = ROOT / "deploy" / "helm"
VALUES = yaml.safe_load((HELM / "values.yaml").read_text())
#: compose's settings that only `iot-etl dagster-instance` and `up` read, not the code location: the chart
#: writes dagster.yaml itself and runs the webserver on its own port.
INSTANCE_ONLY = {"IOT_DAGSTER_HOME", "IOT_DAGSTER_PG_URL", "IOT_WEBSERVER_PORT"}
RUN_ID = "0f0f0f0f-0000-4000-8000-000000000000"


def deployment() -> dict[str, Any]:
    [only] = VALUES["dagster-user-deployments"]["deployments"]
    return only


def compose_code_server() -> dict[str, str]:
    return env_of(resolved()["services"]["code-server"])


def rendered_home(tmp_path: Path) -> Path:
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml(VALUES)))
    return tmp_path


def test_every_key_set_is_one_the_charts_values_schema_allows() -> None:
    assert set(deployment()) <= CHART_KEYS["user_deployment"]
    k8s = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    assert set(k8s) <= CHART_KEYS["k8s_run_launcher"]
    assert set(k8s["runK8sConfig"]) <= CHART_KEYS["run_k8s_config"]
    assert set(VALUES["postgresql"]) <= CHART_KEYS["postgresql"]
    assert set(VALUES["dagsterDaemon"]) <= CHART_KEYS["daemon"]
    queued = VALUES["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert set(queued) <= CHART_KEYS["queued_run_coordinator"]
    assert set(VALUES["global"]) <= CHART_KEYS["global"]


def test_the_instance_the_chart_renders_loads_with_dagsters_own_schemas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = rendered_home(tmp_path)
    monkeypatch.delenv("DAGSTER_PG_PASSWORD", raising=False)
    with pytest.raises(DagsterInvalidConfigError, match="DAGSTER_PG_PASSWORD"):
        check_instance_config(home)  # the storage password comes from the chart's Secret, nowhere else
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", PASSWORDS["DAGSTER_DB_PASSWORD"])
    processed = check_instance_config(home)
    assert set(processed) >= {"run_launcher", "run_storage", "event_log_storage", "schedule_storage"}
    launcher = processed["run_launcher"]
    assert (launcher["instance_config_map"], launcher["postgres_password_secret"]) == (
        "iot-etl-dagster-instance",
        VALUES["global"]["postgresqlSecretName"],
    )
    assert launcher["dagster_home"] == "/dagster_home" and launcher["load_incluster_config"] is True
    assert processed["run_storage"]["postgres_db"]["password"] == PASSWORDS["DAGSTER_DB_PASSWORD"]


def test_a_mistake_in_the_launchers_values_is_refused_by_its_schema(tmp_path: Path) -> None:
    config = instance_yaml(VALUES)["run_launcher"]["config"] | {"job_namespaces": "iot"}
    with pytest.raises(DagsterInvalidConfigError, match="job_namespaces"):
        configurable_class_config("dagster_k8s", "K8sRunLauncher", config)


def test_the_chart_keeps_the_products_instance_policies_and_storage() -> None:
    compose_url = compose_code_server()["IOT_DAGSTER_PG_URL"]
    product = instance_config(Settings(dagster_pg_url=compose_url))
    chart = instance_yaml(VALUES)
    assert chart["run_coordinator"]["class"] == product["run_coordinator"]["class"]
    assert chart["run_coordinator"]["config"] == product["run_coordinator"]["config"]
    assert chart["run_retries"] == product["run_retries"]
    assert chart["telemetry"] == product["telemetry"]
    # Dagster's own bound on a run's time is Kubernetes's here: the chart does not render it
    monitoring = dict(product["run_monitoring"])
    assert monitoring.pop("max_runtime_seconds") == RUN_MAX_RUNTIME_S
    assert chart["run_monitoring"] == monitoring
    job_spec = VALUES["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["jobSpecConfig"]
    assert job_spec["activeDeadlineSeconds"] == RUN_MAX_RUNTIME_S
    expected = product["retention"]
    expected["sensor"]["purge_after_days"].setdefault("started", -1)  # Dagster's default, set for the chart
    assert {k: chart["retention"][k] for k in expected} == expected
    assert chart["compute_logs"]["class"] == "NoOpComputeLogManager"
    # the same role, database and driver as compose's Dagster storage, the password from a Secret
    db = chart["run_storage"]["config"]["postgres_db"]
    assert db.pop("params") == {}
    assert db == product["storage"]["postgres"]["postgres_db"] == postgres_db_config(compose_url)


def kubeconfig(path: Path) -> Path:
    """A kubeconfig naming an API server that is never called: K8sRunLauncher reads one when it starts."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "unused"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def run_job(tmp_path: Path) -> dict[str, Any]:
    """The Job K8sRunLauncher submits for a run of this code location (as `launch_run` builds it)."""
    config = instance_yaml(VALUES)["run_launcher"]["config"] | {
        "load_incluster_config": False,  # outside a cluster: a kubeconfig instead of the pod's account
        "kubeconfig_file": str(kubeconfig(tmp_path / "kubeconfig")),
    }
    launcher = K8sRunLauncher.from_config_value(
        None, configurable_class_config("dagster_k8s", "K8sRunLauncher", config)
    )
    context = code_server_container_context(VALUES, deployment())
    json.dumps(context)  # the chart passes it to `dagster api grpc` as JSON
    origin = retrying_job_origin(image_name(deployment()["image"]), context)
    run = DagsterRun(job_name=origin.job_name, run_id=RUN_ID, job_code_origin=origin)
    container_context = launcher.get_container_context_for_run(run)
    job = construct_dagster_k8s_job(
        job_config=container_context.get_k8s_job_config(
            job_image=origin.repository_origin.container_image, run_launcher=launcher
        ),
        args=["dagster", "api", "execute_run"],
        job_name=get_job_name_from_run_id(run.run_id),
        component="run_worker",
        user_defined_k8s_config=container_context.run_k8s_config,
    )
    return job.to_dict()


def retrying_job_origin(image: str, context: dict[str, Any]) -> Any:
    """A job's origin as a code server in `image` with container context `context` reports it."""
    from dagster import reconstructable

    origin = reconstructable(retrying_job).get_python_origin()
    repository = origin.repository_origin._replace(container_image=image, container_context=context)
    return origin._replace(repository_origin=repository)


def test_a_runs_pod_has_the_code_locations_image_settings_secrets_and_certificate(tmp_path: Path) -> None:
    job = run_job(tmp_path)
    assert job["spec"]["active_deadline_seconds"] == RUN_MAX_RUNTIME_S
    assert job["spec"]["ttl_seconds_after_finished"] == 3600 and job["spec"]["backoff_limit"] == 0
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == image_name(deployment()["image"])
    sources = [s["config_map_ref"] or s["secret_ref"] for s in container["env_from"]]
    assert [s["name"] for s in sources] == ["iot-etl-dagster-iot-pipeline-user-env", "iot-etl-dagster-env"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DAGSTER_HOME"]["value"] == "/dagster_home"
    assert env["DAGSTER_PG_PASSWORD"]["value_from"]["secret_key_ref"] == {
        "name": "iot-etl-dagster-postgresql",
        "key": "postgresql-password",
        "optional": None,
    }
    assert container["resources"] == {"claims": None, **deployment()["resources"]}
    [mount] = container["volume_mounts"]
    [volume] = pod["volumes"]
    assert (mount["name"], mount["mount_path"], mount["read_only"]) == (volume["name"], "/pki", True)
    assert (volume["secret"]["secret_name"], volume["secret"]["default_mode"]) == (
        "iot-etl-dagster-pki",
        0o440,
    )
    # as the image's user, who can read the certificate through the group, with no privileges
    security = pod["security_context"]
    assert (security["run_as_user"], security["fs_group"], security["run_as_non_root"]) == (10001,) * 2 + (
        True,
    )
    assert container["security_context"]["allow_privilege_escalation"] is False
    assert container["security_context"]["capabilities"]["drop"] == ["ALL"]


def test_the_mqtt_certificate_is_where_the_services_look_for_the_publishers() -> None:
    settings = Settings(pki_dir=Path(deployment()["env"]["IOT_PKI_DIR"]))
    from iot_core.pki_layout import PkiLayout

    layout = PkiLayout(settings.pki_dir)
    cert, key = layout.service("publisher")
    [volume] = deployment()["volumes"]
    [mount] = deployment()["volumeMounts"]
    paths = {Path(mount["mountPath"]) / item["path"] for item in volume["secret"]["items"]}
    assert paths == {layout.ca_chain, cert, key}
    script = (ROOT / "deploy" / "certs.sh").read_text()
    assert "bundle dagster publisher\n" in script, "compose's Dagster services hold the same certificate"


def test_the_code_location_reads_the_same_settings_as_compose_and_its_secrets_only_from_a_secret() -> None:
    compose = {k: v for k, v in compose_code_server().items() if k.startswith("IOT_")}
    plain = code_server_env(VALUES, deployment())["value"]
    secret_keys = set(read_env_file(HELM / "secrets.env.example"))
    helm = {k for k in plain if k.startswith("IOT_")} | secret_keys
    assert helm == set(compose) - INSTANCE_ONLY
    for key in INSTANCE_ONLY:
        assert key[4:].lower() in Settings.model_fields
    holding_a_password = {k for k, v in compose.items() if any(p in v for p in PASSWORDS.values())}
    assert secret_keys == holding_a_password - INSTANCE_ONLY, "what holds a password is in the Secret"
    for key in plain.keys() & compose.keys():
        assert plain[key] == compose[key], key
    assert code_server_env(VALUES, deployment())["secret_refs"] == ["iot-etl-dagster-env"]
    example = read_env_file(HELM / "secrets.env.example")
    for key, url in example.items():  # the same roles: writer, owner, the pipeline's Redis user
        assert user_of(url) == user_of(compose[key]), key
        assert urlsplit(url).hostname == urlsplit(compose[key]).hostname, key
        Settings(**{key[4:].lower(): url})


def test_no_secret_is_written_in_the_values_or_the_example() -> None:
    for path in (HELM / "values.yaml", HELM / "secrets.env.example", HELM / "README.md"):
        text = path.read_text()
        assert not any(secret in text for secret in PASSWORDS.values()), path
        assert not re.search(r"(?i)(password|passwd|token)\s*:\s*\S", text), path
    assert VALUES["generatePostgresqlPasswordSecret"] is False, "the chart would write its default password"
    assert "postgresqlPassword" not in VALUES["postgresql"]


def test_every_dagster_process_runs_the_products_image_as_its_user() -> None:
    images = {
        image_name(VALUES["dagsterWebserver"]["image"]),
        image_name(VALUES["dagsterDaemon"]["image"]),
        image_name(deployment()["image"]),
    }
    assert len(images) == 1
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = re.search(r"useradd --create-home --uid (\d+) iot", dockerfile)
    assert uid and re.search(r"ENV DAGSTER_HOME=(\S+)", dockerfile)[1] == VALUES["global"]["dagsterHome"]
    for section in (VALUES["dagsterWebserver"], VALUES["dagsterDaemon"], deployment()):
        assert section["podSecurityContext"]["runAsUser"] == int(uid[1])
        assert section["resources"]["limits"]["memory"] and section["resources"]["requests"]["cpu"]
    port = VALUES["dagsterWebserver"]["service"]["port"]
    assert port >= 1024 and VALUES["dagsterWebserver"]["readinessProbe"]["httpGet"]["port"] == port


def test_the_code_location_is_the_products_definitions() -> None:
    import importlib

    import dagster

    args = deployment()["dagsterApiGrpcArgs"]
    module, attribute = args[args.index("--module-name") + 1], args[args.index("--attribute") + 1]
    assert (module, attribute) == ("dagster_project.definitions", "defs")
    assert isinstance(getattr(importlib.import_module(module), attribute), dagster.Definitions)
    assert (
        module
        == yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"][
            "module_name"
        ]
    )
