"""What Dagster's Helm chart (`dagster/dagster` 1.13.x) renders from a values file, for the parts the
product's values set: no `helm` here, so the chart's templates are transcribed for those parts only.

- `instance_yaml`: `templates/configmap-instance.yaml` (dagster.yaml) with the instance helpers
  (`helpers/instance/_*.tpl`): scheduler, PostgreSQL storage, K8sRunLauncher, QueuedRunCoordinator,
  compute logs, run monitoring, run retries, sensors and schedules threads, telemetry, retention.
- `code_server_container_context`: `dagsterUserDeployments.k8sContainerContext`, the container context
  a user deployment passes to `dagster api grpc` and that K8sRunLauncher applies to each run's pod.
- `code_server_env`: the environment the chart gives a user deployment's container.

A value type these templates do not cover here raises NotImplementedError instead of rendering
something the chart would not. `CHART_KEYS` are the keys the chart's values schema
(`schema/charts/.../subschema/*.py`) allows in the sections the product sets: a misspelt key fails
`helm install` there and the test here.
"""

from __future__ import annotations

from typing import Any

RELEASE = "iot-etl"
RETENTION_KINDS = (("sensor", "sensor"), ("schedule", "schedule"), ("autoMaterialize", "auto_materialize"))
NAMESPACE = "iot"
CHART = "dagster"

CHART_KEYS: dict[str, set[str]] = {
    "user_deployment": {
        "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "port",
        "env", "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations",
        "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe",
        "startupProbe", "labels", "volumeMounts", "volumes", "schedulerName",
    },
    "k8s_run_launcher": {
        "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
        "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
        "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig",
    },
    "run_k8s_config": {
        "containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata",
    },
    "postgresql": {
        "image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
        "postgresqlDatabase", "postgresqlParams", "postgresqlScheme", "service",
    },
    "daemon": {
        "enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps", "envSecrets",
        "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
        "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe", "annotations",
        "runMonitoring", "runRetries", "sensors", "schedules", "schedulerName", "volumeMounts", "volumes",
    },
    "queued_run_coordinator": {
        "maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds", "dequeueNumWorkers",
        "dequeueUseThreads",
    },
    "global": {"postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName"},
}  # fmt: skip


def fullname(values: dict[str, Any], release: str = RELEASE) -> str:
    """`dagster.fullname`: the release name, with the chart's name unless the release holds it."""
    override = values.get("global", {}).get("fullnameOverride") or values.get("fullnameOverride")
    if override:
        return override[:63].rstrip("-")
    name = values.get("global", {}).get("nameOverride") or CHART
    return (release if name in release else f"{release}-{name}")[:63].rstrip("-")


def service_account_name(values: dict[str, Any], release: str = RELEASE) -> str:
    return (
        values.get("global", {}).get("serviceAccountName")
        or values.get("serviceAccount", {}).get("name")
        or fullname(values, release)
    )


def postgresql_secret_name(values: dict[str, Any], release: str = RELEASE) -> str:
    return values["global"].get("postgresqlSecretName") or f"{fullname(values, release)}-postgresql-secret"


def image_name(image: dict[str, Any]) -> str:
    """`dagster.dagsterImage.name` (the chart's version stands in for a missing tag: not rendered here)."""
    if image.get("tag") in (None, ""):
        raise NotImplementedError("an image without a tag takes the chart's version")
    return f"{image['repository']}:{image['tag']}"


def _truthy(value: Any) -> bool:
    """Go templates' truth: empty strings, zero, empty collections and nil are false."""
    return value not in (None, False, 0, "", [], {})


def _postgres_config(values: dict[str, Any]) -> dict[str, Any]:
    pg = values["postgresql"]
    if pg["enabled"]:
        raise NotImplementedError("the chart's own PostgreSQL")
    db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams") or {},
    }
    if _truthy(pg.get("postgresqlScheme")):
        db["scheme"] = pg["postgresqlScheme"]
    return {"postgres_db": db}


def _run_launcher(values: dict[str, Any], release: str, namespace: str) -> dict[str, Any]:
    launcher = values["runLauncher"]
    if launcher["type"] != "K8sRunLauncher":
        raise NotImplementedError(launcher["type"])
    k8s = launcher["config"]["k8sRunLauncher"]
    config: dict[str, Any] = {"load_incluster_config": k8s["loadInclusterConfig"]}
    if _truthy(k8s.get("kubeconfigFile")):
        config["kubeconfig_file"] = k8s["kubeconfigFile"]
    config["job_namespace"] = k8s.get("jobNamespace") or namespace
    config["image_pull_policy"] = k8s["imagePullPolicy"]
    if _truthy(values.get("imagePullSecrets")):
        config["image_pull_secrets"] = values["imagePullSecrets"]
    config["service_account_name"] = service_account_name(values, release)
    if "image" in k8s:
        raise NotImplementedError("job_image: runs take the code location's image")
    config["dagster_home"] = values["global"]["dagsterHome"]
    config["instance_config_map"] = f"{fullname(values, release)}-instance"
    config["postgres_password_secret"] = postgresql_secret_name(values, release)
    if _truthy(k8s.get("envConfigMaps")):
        config["env_config_maps"] = [m["name"] for m in k8s["envConfigMaps"] if "name" in m]
    if _truthy(k8s.get("envSecrets")):
        config["env_secrets"] = [s["name"] for s in k8s["envSecrets"] if "name" in s]
    snake = {
        "envVars": "env_vars",
        "volumeMounts": "volume_mounts",
        "volumes": "volumes",
        "labels": "labels",
        "resources": "resources",
    }
    config |= {key: k8s[name] for name, key in snake.items() if _truthy(k8s.get(name))}
    if _truthy(k8s.get("failPodOnRunFailure")):
        config["fail_pod_on_run_failure"] = True
    if _truthy(k8s.get("schedulerName")):
        config["scheduler_name"] = k8s["schedulerName"]
    if _truthy(k8s.get("securityContext")):
        config["security_context"] = k8s["securityContext"]
    run_k8s = k8s.get("runK8sConfig")
    if _truthy(run_k8s):
        parts = {
            "containerConfig": "container_config",
            "podSpecConfig": "pod_spec_config",
            "podTemplateSpecMetadata": "pod_template_spec_metadata",
            "jobSpecConfig": "job_spec_config",
            "jobMetadata": "job_metadata",
        }
        config["run_k8s_config"] = {
            k: run_k8s[name] for name, k in parts.items() if _truthy(run_k8s.get(name))
        }
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def _run_coordinator(daemon: dict[str, Any]) -> dict[str, Any]:
    coordinator = daemon["runCoordinator"]
    if coordinator["type"] != "QueuedRunCoordinator":
        raise NotImplementedError(coordinator["type"])
    queued = coordinator["config"]["queuedRunCoordinator"]
    block: dict[str, Any] = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
    if not any(_truthy(v) for v in queued.values()):
        return block
    config: dict[str, Any] = {
        "max_concurrent_runs": -1 if queued.get("maxConcurrentRuns") is None else queued["maxConcurrentRuns"]
    }
    names = {
        "tagConcurrencyLimits": "tag_concurrency_limits",
        "dequeueIntervalSeconds": "dequeue_interval_seconds",
        "dequeueUseThreads": "dequeue_use_threads",
        "dequeueNumWorkers": "dequeue_num_workers",
    }
    config |= {key: queued[name] for name, key in names.items() if _truthy(queued.get(name))}
    if "blockOpConcurrencyLimitedRuns" in queued:
        raise NotImplementedError("blockOpConcurrencyLimitedRuns")
    return block | {"config": config}


def _threads(section: dict[str, Any]) -> dict[str, Any] | None:
    if not _truthy(section.get("useThreads")):
        return None
    out: dict[str, Any] = {"use_threads": section["useThreads"]}
    for name, key in (("numWorkers", "num_workers"), ("numSubmitWorkers", "num_submit_workers")):
        if _truthy(section.get(name)):
            out[key] = section[name]
    return out


def instance_yaml(
    values: dict[str, Any], release: str = RELEASE, namespace: str = NAMESPACE
) -> dict[str, Any]:
    """The `dagster.yaml` of the chart's `<fullname>-instance` ConfigMap."""
    if values["scheduler"]["type"] != "DagsterDaemonScheduler" or values["scheduler"].get("config"):
        raise NotImplementedError("a scheduler other than the daemon's, or its config")
    storage = _postgres_config(values)
    out: dict[str, Any] = {
        "scheduler": {"module": "dagster.core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": storage,
        },
        "run_launcher": _run_launcher(values, release, namespace),
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": storage,
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": storage,
        },
    }
    daemon = values["dagsterDaemon"]
    if daemon["enabled"] and daemon["runCoordinator"]["enabled"]:
        out["run_coordinator"] = _run_coordinator(daemon)
    if values["computeLogManager"]["type"] != "NoOpComputeLogManager":
        raise NotImplementedError(values["computeLogManager"]["type"])
    out["compute_logs"] = {
        "module": "dagster.core.storage.noop_compute_log_manager",
        "class": "NoOpComputeLogManager",
    }
    if _truthy(values.get("pythonLogs")):
        raise NotImplementedError("pythonLogs")
    monitoring = daemon["runMonitoring"]
    if daemon["enabled"] and monitoring["enabled"]:
        block = {"enabled": True, "start_timeout_seconds": monitoring["startTimeoutSeconds"]}
        if monitoring.get("cancelTimeoutSeconds") is not None:
            block["cancel_timeout_seconds"] = monitoring["cancelTimeoutSeconds"]
        if monitoring.get("maxResumeRunAttempts") is not None:
            block["max_resume_run_attempts"] = monitoring["maxResumeRunAttempts"]
        block["poll_interval_seconds"] = monitoring["pollIntervalSeconds"]
        block["free_slots_after_run_end_seconds"] = monitoring["freeSlotsAfterRunEndSeconds"]
        out["run_monitoring"] = block
    retries = daemon["runRetries"]
    if daemon["enabled"] and retries["enabled"]:
        out["run_retries"] = {"enabled": True} | (
            {"max_retries": retries["maxRetries"]} if _truthy(retries.get("maxRetries")) else {}
        )
    for name in ("sensors", "schedules"):
        threads = _threads(daemon[name]) if daemon["enabled"] else None
        if threads:
            out[name] = threads
    out["telemetry"] = {"enabled": values["telemetry"]["enabled"]}
    retention = values["retention"]
    if retention["enabled"]:
        out["retention"] = {
            key: {"purge_after_days": retention[name]["purgeAfterDays"]}
            for name, key in RETENTION_KINDS
            if _truthy(retention.get(name))
        }
    if _truthy(values.get("additionalInstanceConfig")):
        raise NotImplementedError("additionalInstanceConfig")
    return out


def code_server_container_context(
    values: dict[str, Any], deployment: dict[str, Any], release: str = RELEASE, namespace: str = NAMESPACE
) -> dict[str, Any]:
    """`dagsterUserDeployments.k8sContainerContext`: what runs of this code location inherit."""
    k8s: dict[str, Any] = {"image_pull_policy": deployment["image"]["pullPolicy"]}
    if _truthy(values.get("imagePullSecrets")):
        k8s["image_pull_secrets"] = values["imagePullSecrets"]
    k8s["env_config_maps"] = [
        f"{fullname(values, release)}-{deployment['name']}-user-env",
        *(m["name"] for m in deployment.get("envConfigMaps", []) if "name" in m),
    ]
    if _truthy(deployment.get("envSecrets")):
        k8s["env_secrets"] = [s["name"] for s in deployment["envSecrets"] if "name" in s]
    for name, key in (
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
    ):
        if _truthy(deployment.get(name)):
            k8s[key] = deployment[name]
    if _truthy(deployment.get("schedulerName")):
        k8s["scheduler_name"] = deployment["schedulerName"]
    k8s["namespace"] = namespace
    k8s["service_account_name"] = f"{fullname(values, release)}-user-deployments"
    if isinstance(deployment.get("env"), list) and deployment["env"]:
        k8s["env"] = deployment["env"]
    pod_spec: dict[str, Any] = {"automount_service_account_token": True}
    k8s["run_k8s_config"] = {"pod_spec_config": pod_spec}
    if _truthy(deployment.get("annotations")):
        k8s["run_k8s_config"]["pod_template_spec_metadata"] = {"annotations": deployment["annotations"]}
    return {"k8s": k8s}


def code_server_env(values: dict[str, Any], deployment: dict[str, Any]) -> dict[str, Any]:
    """A user deployment's environment: `value` for plain variables (its `env` map goes through a
    ConfigMap), the Secret names whose keys all become variables (`envFrom`), and the one variable the
    chart reads from a Secret by key."""
    env = deployment.get("env") or {}
    if not isinstance(env, dict):
        raise NotImplementedError("env as a list")
    global_ = values["global"]
    plain = {"DAGSTER_HOME": global_["dagsterHome"], **{k: str(v) for k, v in env.items()}}
    plain["DAGSTER_CURRENT_IMAGE"] = image_name(deployment["image"])
    return {
        "value": plain,
        "secret_refs": [s["name"] for s in deployment.get("envSecrets", [])],
        "secret_keys": {"DAGSTER_PG_PASSWORD": (postgresql_secret_name(values), "postgresql-password")},
    }
