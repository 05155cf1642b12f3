"""The Dagster UI as a user sees it (Chromium): the asset graph, telemetry's checks and its metadata plotted
across hour partitions, a run's page; screenshots of each, without the first-visit dialog."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from dagster import DagsterInstance

from dagster_project.definitions import defs
from iot_core.settings import Settings
from iot_etl.dagster_instance import write_instance_config
from tests.support.browser import CHROMEDRIVER, CHROMIUM, DISMISSED_FIRST_VISIT_DIALOG, Browser
from tests.support.freshness import evaluate_freshness_check
from tests.support.hours import ClosedHour
from tests.support.pipeline import SensorDriver
from tests.support.ports import free_port
from tests.support.webserver import webserver

pytestmark = [
    pytest.mark.services,
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="chromium and chromium-driver are not installed (scripts/test.sh installs them)",
    ),
]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / ".iot-etl" / "screenshots"
FIRST_VISIT_DIALOG = "Join the Dagster community"
#: Closed hours before the current one: (hours back, readings, undecodable payloads), each hour run whole so
#: that its partition carries the hour's totals, which the asset's Plots view draws across partitions.
HOURS = [(5, 4, 1), (4, 9, 0), (3, 6, 2), (2, 12, 1), (1, 7, 0)]


def closed_hours(settings: Settings) -> list[ClosedHour]:
    """The HOURS in the stream, oldest first (stream IDs only grow, so before any current entry)."""
    hours = []
    for back, readings, undecodable in HOURS:
        hour = ClosedHour(settings, hours_back=back)
        for n in range(readings):
            hour.add(60 + n * 240, f"devices/ui-{n % 3}/temperature", f"{18 + back + n * 0.5} °C")
        for n in range(undecodable):
            hour.add(3000 + n, "devices/ui-0/humidity", b"\xff\xfe")
        hours.append(hour)
    return hours


def add_current_entries(settings: Settings) -> int:
    """A few entries now, for the sensor's micro-batch run; returns the last one's time (ms)."""
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    for topic, payload in [
        ("devices/ui-1/temperature", b"21.5 \xc2\xb0C"),
        ("devices/ui-1/humidity", b"40"),
        ("nowhere/x", b"1"),
    ]:
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
    return int(entry.split(b"-")[0])


@pytest.fixture
def ui_with_a_run(clean_db: str, settings: Settings, tmp_path: Path) -> Iterator[tuple[int, str]]:
    hours = closed_hours(settings)
    last_ms = add_current_entries(settings)
    home = write_instance_config(settings.model_copy(update={"dagster_home": tmp_path / "home"}))
    with DagsterInstance.from_config(str(home)) as instance:
        for hour in hours:
            assert hour.run(instance).success
        requests = SensorDriver(settings, instance).drain(last_ms)
        run_id = instance.get_runs(limit=1)[0].run_id
        assert evaluate_freshness_check(defs, instance).passed  # the hour due has been materialized
    assert requests
    port = free_port()
    # an installation whose data starts with the first of those hours: the plots span its partitions
    env = {**os.environ, "DAGSTER_HOME": str(home), "IOT_PARTITIONS_START": hours[0].partition_key}
    with webserver(env, port, timeout_s=300):  # the code location loads slowly on a busy machine
        yield port, run_id


def test_pages_show_what_a_user_needs_without_the_first_visit_dialog(ui_with_a_run: tuple[int, str]) -> None:
    port, run_id = ui_with_a_run
    base = f"http://127.0.0.1:{port}"
    graph = f"{base}/locations/iot_pipeline/asset-groups/ingest"
    graph_names = ["raw_messages", "telemetry", "hourly_rollups"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    with Browser() as browser:  # a first visit: the dialog would cover every screenshot
        browser.open(graph, graph_names)
        browser.wait_for_texts([FIRST_VISIT_DIALOG], timeout_s=30)

    pages = {
        "asset-graph": (graph, graph_names),
        "telemetry-checks": (  # the freshness check, beside the others
            f"{base}/assets/telemetry?view=checks&checkDetail=freshness_check",
            ["reconciliation", "schema_pass_rate", "device_freshness", "has been materialized (deadline"],
        ),
        "run": (f"{base}/runs/{run_id}", ["micro_batch_job", "raw_messages", "telemetry"]),
    }
    with Browser() as browser:
        browser.set_local_storage(base, DISMISSED_FIRST_VISIT_DIALOG)
        for name, (url, expected) in pages.items():
            browser.open(url, expected)
            browser.wait_for_texts_gone(["Loading"])
            shot = browser.screenshot(SCREENSHOTS / f"{name}.png")
            assert FIRST_VISIT_DIALOG not in browser.visible_text(), f"{name}: the dialog covers the page"
            assert shot.stat().st_size > 20_000, f"{name}: the screenshot is nearly empty"

        # the Overview's metadata as plots, one point per hour partition with its totals
        browser.open(f"{base}/assets/telemetry?view=overview", ["Metadata", "raw_messages"])
        browser.click_button("Plots")
        browser.wait_for_texts(["measurements", "raw_messages", "rejected"])
        browser.wait_for_texts_gone(["Loading"])
        browser.scroll_to("measurements")
        browser.wait_for_texts_gone(["Loading"])  # the plots reload now and then
        shot = browser.screenshot(SCREENSHOTS / "telemetry-plots.png")
        assert FIRST_VISIT_DIALOG not in browser.visible_text()
        assert shot.stat().st_size > 20_000
