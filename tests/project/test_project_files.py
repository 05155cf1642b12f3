"""The files users read and run: the configuration reference, compose.yaml, the broker config, settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import Field, SecretStr, ValidationError

from iot_core.settings import Settings
from iot_etl.config_reference import render
from iot_etl.dagster_instance import instance_config

ROOT = Path(__file__).resolve().parents[2]


class _SecretDefaults(Settings):
    """Settings whose secret defaults hold passwords, which the reference must not show."""

    database_url: SecretStr = Field(SecretStr("postgresql://iot:hunter2@db:5432/iot"), description="Writer.")
    mqtt_password: SecretStr | None = Field(SecretStr("hunter3"), description="MQTT password.")


def test_configuration_reference_is_current() -> None:
    """docs/configuration.md is exactly what the generator renders from the settings now."""
    shown = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert shown == render(), (
        "docs/configuration.md is stale: run `python -m iot_etl.config_reference > docs/configuration.md`"
    )


def test_configuration_reference_lists_every_setting_once_with_its_default() -> None:
    rows = re.findall(r"^\| `(IOT_[A-Z0-9_]+)` \| `([^`]*)` \|", render(), re.M)
    assert sorted(name for name, _ in rows) == sorted(f"IOT_{name.upper()}" for name in Settings.model_fields)
    table = dict(rows)
    assert table["IOT_WINDOW_SECONDS"] == "60"
    assert table["IOT_LISTENER_TOPICS"] == "devices/#,qs/v1/+/events,stat/#,tele/#"
    assert table["IOT_SECURITY"] == "false"
    assert table["IOT_DATABASE_URL"] == "postgresql://postgres@127.0.0.1:5432/iot"
    assert table["IOT_DAGSTER_PG_URL"] == "(none)"
    headings = re.findall(r"^## (.+)$", render(), re.M)
    assert headings[:2] == ["Storage", "MQTT"] and "Other" not in headings


def test_configuration_reference_shows_no_password() -> None:
    text = render(_SecretDefaults)
    assert "hunter2" not in text and "hunter3" not in text
    assert "| `IOT_DATABASE_URL` | `postgresql://iot:***@db:5432/iot` |" in text
    assert "| `IOT_MQTT_PASSWORD` | `***` |" in text


def test_compose_parses_and_its_settings_exist() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {
        "certs",
        "timescaledb",
        "redis",
        "mosquitto",
        "listener",
        "dagster-webserver",
        "dagster-daemon",
    } <= set(services)
    for name, service in services.items():
        assert ":" in service.get("image", "x:pinned"), f"{name}: image tag must be pinned"
        env = {k: v for k, v in (service.get("environment") or {}).items() if k.startswith("IOT_")}
        for key in env:
            assert key[4:].lower() in Settings.model_fields, f"{name}: {key} is not a setting"
        if env:
            Settings(**{k[4:].lower(): v for k, v in env.items()})  # the values parse
    listener = services["listener"]["environment"]
    assert listener["IOT_SECURITY"] == "true" and listener["IOT_MQTT_HOST"] == "mosquitto"
    assert "IOT_MQTT_PORT" not in listener, "no plaintext MQTT in compose"
    assert "redis:6379" in listener["IOT_LISTENER_REDIS_URL"]
    daemon = services["dagster-daemon"]["environment"]
    assert "@timescaledb:5432/" in daemon["IOT_DATABASE_URL"] and "redis:6379" in daemon["IOT_REDIS_URL"]
    (published,) = services["dagster-webserver"]["ports"]
    assert published.startswith("127.0.0.1:") and published.endswith(f":{daemon['IOT_WEBSERVER_PORT']}")


def test_workspace_points_at_the_definitions() -> None:
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]
    assert module["module_name"] == "dagster_project.definitions" and module["attribute"] == "defs"


def test_dagster_instance_config_sqlite_by_default_postgres_when_set(tmp_path: Path) -> None:
    sqlite = instance_config(Settings(dagster_home=tmp_path))
    assert sqlite["storage"] == {"sqlite": {"base_dir": str(tmp_path.resolve() / "storage")}}
    pg = instance_config(Settings(dagster_home=tmp_path, dagster_pg_url="postgresql://u:secret@h/dagster"))
    assert pg["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert "secret" not in yaml.safe_dump(pg), "the password stays in the environment"
    assert sqlite["run_coordinator"]["config"]["dequeue_interval_seconds"] == 1


def test_settings_parse_topic_lists_and_refuse_windows_that_do_not_tile_hours() -> None:
    assert Settings(listener_topics="a/#, b/+").listener_topics == ["a/#", "b/+"]
    assert Settings(listener_topics='["a/#"]').listener_topics == ["a/#"]
    with pytest.raises(ValidationError, match="must divide 3600"):
        Settings(window_seconds=7 * 60)
    with pytest.raises(ValidationError):
        Settings(listener_qos=3)
