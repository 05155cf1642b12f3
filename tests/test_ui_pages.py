"""The Dagster UI as a user sees it: asset graph, the telemetry asset's checks, a run's page (Chromium)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from dagster import DagsterInstance

from iot_core.settings import Settings
from iot_etl.dagster_instance import write_instance_config
from tests.support.browser import CHROMIUM, rendered_dom, screenshot
from tests.support.pipeline import SensorDriver
from tests.support.ports import free_port

pytestmark = [
    pytest.mark.services,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)"),
]
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / ".iot-etl" / "screenshots"


def _graphql_ready(port: int) -> bool:
    query = json.dumps(
        {"query": "{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }"}
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=query.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return bool(json.loads(response.read())["data"]["repositoriesOrError"].get("nodes"))
    except OSError:
        return False


@pytest.fixture
def ui_with_a_run(clean_db: str, settings: Settings, tmp_path: Path) -> Iterator[tuple[int, str]]:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    for n, (topic, payload) in enumerate(
        [
            ("devices/ui-1/temperature", b"21.5 \xc2\xb0C"),
            ("devices/ui-1/humidity", b"40"),
            ("nowhere/x", b"1"),
        ]
    ):
        entry = client.xadd(
            settings.stream_prefix,
            {
                "topic": topic,
                "payload": payload,
                "qos": "1",
                "retain": "0",
                "rx_us": str(time.time_ns() // 1000),
            },
        )
        last_ms = int(entry.split(b"-")[0]) + n * 0
    home = write_instance_config(settings.model_copy(update={"dagster_home": tmp_path / "home"}))
    with DagsterInstance.from_config(str(home)) as instance:
        requests = SensorDriver(settings, instance).drain(last_ms)
        run_id = instance.get_runs(limit=1)[0].run_id
    assert requests
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    webserver = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not _graphql_ready(port):
            assert webserver.poll() is None and time.monotonic() < deadline, "the webserver did not come up"
            time.sleep(1)
        yield port, run_id
    finally:
        os.killpg(webserver.pid, 15)
        webserver.wait(30)


def test_asset_graph_checks_tab_and_run_page_show_what_a_user_needs(ui_with_a_run: tuple[int, str]) -> None:
    port, run_id = ui_with_a_run
    base = f"http://127.0.0.1:{port}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pages = {
        "asset-graph": (
            f"{base}/locations/iot_pipeline/asset-groups/ingest",
            ["raw_messages", "telemetry", "hourly_rollups"],
        ),
        "telemetry-checks": (f"{base}/assets/telemetry?view=checks", ["reconciliation", "schema_pass_rate"]),
        "run": (f"{base}/runs/{run_id}", ["micro_batch_job", "raw_messages", "telemetry"]),
    }
    for name, (url, expected) in pages.items():
        dom = rendered_dom(url)
        missing = [text for text in expected if text not in dom]
        assert not missing, f"{name}: {missing} not shown at {url}"
        shot = screenshot(url, SCREENSHOTS / f"{name}.png")
        assert shot.stat().st_size > 20_000, f"{name}: the screenshot is nearly empty"
