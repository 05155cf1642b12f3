"""`iot-etl status` shows each hour check's newest result from Dagster's storage, as Dagster's Checks tab
does not while a window's run is in flight: a real micro-batch run on a real instance, then the lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import DagsterInstance

from dagster_project.defs.ingest.sensors import run_request
from dagster_project.defs.quality.checks import HOUR_CHECKS
from dagster_project.defs.resources import resources_from_settings
from dagster_project.lib.windows import Window
from iot_core.settings import Settings
from iot_etl.status_checks import check_lines
from tests.support.hours import ClosedHour
from tests.support.pipeline import execute_request

pytestmark = pytest.mark.services


def test_status_lists_every_hour_checks_newest_result(
    clean_db: str, settings: Settings, tmp_path: Path
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    mine = settings.model_copy(update={"dagster_home": home})
    assert {item for _, item, value in check_lines(mine)} == {c.name for c in HOUR_CHECKS}
    assert all(value == "not evaluated yet" for _, _, value in check_lines(mine))

    hour = ClosedHour(settings, hours_back=2)
    hour.add(3, "devices/status-1/temperature", json.dumps({"value": 21.0}))
    hour.add(4, "devices/status-1/temperature", '{"value": ')  # cut short: rejected
    window = Window(hour.start_ms, hour.start_ms + settings.window_ms)
    with DagsterInstance.from_config(str(home)) as instance:
        run = execute_request(run_request(window), instance, resources_from_settings(settings))
    lines = {item: value for part, item, value in check_lines(mine) if part == "checks"}
    assert lines["reconciliation"].startswith("passed, hour " + window.partition_key)
    assert f"(run {run.run_id[:8]})" in lines["reconciliation"]
    # half the hour's messages rejected: schema_pass_rate fails, and says why
    assert lines["schema_pass_rate"].startswith("FAILED (ERROR): ")
    assert window.partition_key in lines["schema_pass_rate"]
