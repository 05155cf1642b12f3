"""No credential reaches the Dagster UI: the webserver's GraphQL shows resource config without secrets."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest
from pydantic import SecretStr

from dagster_project.defs.resources import resources_from_settings
from iot_core.settings import Settings
from tests.support.ports import free_port
from tests.support.webserver import webserver

pytestmark = pytest.mark.services
SECRETS = {
    "IOT_DATABASE_URL": "postgresql://postgres:db-secret-7f3a@127.0.0.1:5432/iot_never_used",
    "IOT_REDIS_URL": "redis://:redis-secret-91c2@127.0.0.1:6379/0",
    "IOT_MQTT_USERNAME": "listener",
    "IOT_MQTT_PASSWORD": "mqtt-secret-5d0e",
    "IOT_DAGSTER_PG_URL": "postgresql://postgres:dagster-secret-c44b@127.0.0.1:5432/dagster_never_used",
}
QUERY = """
{ repositoriesOrError { ... on RepositoryConnection { nodes { name
    allTopLevelResourceDetails { name configuredValues { key value type } } } } } }
"""


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_resource_config_in_the_ui_holds_no_secret(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
    env.update(SECRETS, DAGSTER_HOME=str(tmp_path), IOT_DAGSTER_HOME=str(tmp_path))
    with webserver(env, port, timeout_s=180):
        nodes = graphql(port, QUERY)["data"]["repositoriesOrError"].get("nodes") or []
        resources = [r for node in nodes for r in node["allTopLevelResourceDetails"]]
        assert {"database", "redis", "mqtt", "policy"} <= {r["name"] for r in resources}
        shown = json.dumps(resources)
        for secret in ("db-secret-7f3a", "redis-secret-91c2", "mqtt-secret-5d0e", "dagster-secret-c44b"):
            assert secret not in shown
        values = {(r["name"], v["key"]): v for r in resources for v in r["configuredValues"]}
        assert values[("database", "url")]["type"] == "ENV_VAR"
        assert values[("database", "url")]["value"] == "IOT_DATABASE_URL"
        assert values[("mqtt", "password")]["value"] == "IOT_MQTT_PASSWORD"


def test_two_settings_objects_in_one_process_keep_their_own_secrets(settings: Settings) -> None:
    other = settings.model_copy(update={"database_url": SecretStr("postgresql://u:other-9a1@h/db")})
    mine = resources_from_settings(settings)["database"].process_config_and_initialize()
    theirs = resources_from_settings(other)["database"].process_config_and_initialize()
    assert mine.url == settings.database_url.get_secret_value()
    assert theirs.url == "postgresql://u:other-9a1@h/db"
