"""The programs and modules the deployments start from the product's image exist there: the image installs
the project with its `deploy` extra (Dagster's run launchers, pinned to the installed Dagster's line), and
every program compose, the override and the Helm values run is a console script of an installed package."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from iot_core.errors import UserFacingError
from iot_etl.dagster_instance import load_run_launcher
from tests.support.compose import DOCKER_LAUNCHER, ROOT, resolved

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: What the chart runs in the image (its templates' commands) besides the code location's `dagster api grpc`.
CHART_PROGRAMS = {"dagster", "dagster-webserver", "dagster-daemon"}


def console_scripts() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group="console_scripts")}


def test_the_image_installs_the_deploy_extra_pinned_to_the_installed_dagster() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'pip install --no-cache-dir -e "\.\[deploy\]"', dockerfile)
    assert '".[dev,deploy]"' in (ROOT / "scripts" / "setup.sh").read_text(), "the tests need them too"
    deploy = PYPROJECT["project"]["optional-dependencies"]["deploy"]
    library_line = metadata.version("dagster-postgres")
    for requirement in deploy:
        name, _, version = requirement.partition("==")
        assert version == library_line, f"{name}: the libraries of dagster {metadata.version('dagster')}"
        assert metadata.version(name) == version, name


def test_every_program_the_deployments_run_is_a_console_script_that_loads() -> None:
    scripts = console_scripts()
    programs = set(CHART_PROGRAMS) | {"celery"}
    for service in resolved(DOCKER_LAUNCHER)["services"].values():
        if "build" not in service:
            continue
        command = service.get("command") or []
        words = command[-1].split() if command[:2] == ["sh", "-c"] else command[:1]
        programs |= {w for i, w in enumerate(words) if i == 0 or words[i - 1] in ("&&", "exec")}
    programs -= {"sh", "exec"}
    assert {"iot-etl", "dagster", "dagster-webserver", "dagster-daemon"} <= programs
    for program in sorted(programs):
        assert program in scripts, f"{program} is not installed"
        scripts[program].load()
    assert PYPROJECT["project"]["scripts"]["iot-etl"] == scripts["iot-etl"].value


def test_the_code_servers_command_line_takes_the_code_location() -> None:
    helm = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
    [deployment] = helm["dagster-user-deployments"]["deployments"]
    compose = resolved()["services"]["code-server"]["command"]
    help_text = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "api", "grpc", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for option in [*deployment["dagsterApiGrpcArgs"][::2], *(w for w in compose if w.startswith("--"))]:
        assert option in help_text, option


def test_the_classes_the_instances_name_import() -> None:
    for module, name in (
        ("dagster_k8s", "K8sRunLauncher"),
        ("dagster_docker", "DockerRunLauncher"),
        ("dagster_celery.launcher", "CeleryRunLauncher"),
        ("dagster_celery.app", "app"),
        ("dagster_postgres", "DagsterPostgresStorage"),
        ("dagster_project.run_launcher", "ForkingRunLauncher"),
    ):
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"


def test_the_celery_launcher_file_loads_with_its_urls_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = ROOT / "deploy" / "celery" / "run_launcher.yaml"
    monkeypatch.delenv("DAGSTER_CELERY_BROKER_URL", raising=False)
    with pytest.raises(UserFacingError, match="DAGSTER_CELERY_BROKER_URL"):
        load_run_launcher(path)
    monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", "redis://celery:secret@broker:6379/0")
    monkeypatch.setenv("DAGSTER_CELERY_BACKEND_URL", "redis://celery:secret@broker:6379/1")
    block = load_run_launcher(path)
    assert block["class"] == "CeleryRunLauncher" and "secret" not in path.read_text()
