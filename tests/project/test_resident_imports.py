"""What the long-lived processes of `iot-etl up` keep imported: a library imported once stays in a process's
memory for as long as it runs.

The code server loads the code location to serve the sensor and the UI; it never runs a decoder, so it holds
neither polars nor pandera (the run workers' forkserver has them). `iot-etl up` itself never imports Dagster:
it asks the webserver about failed runs and creates the instance's storage in a child interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from iot_etl.children import REPO_ROOT

PROBE = """
import importlib, json, sys
for name in sys.argv[2:]:
    importlib.import_module(name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1].split(",")))))
"""


def imported(modules: list[str], watched: list[str]) -> list[str]:
    """Which of `watched` (top-level packages) a fresh interpreter holds after importing `modules`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
    # partitions from a fixed hour: the definitions then need no database to load
    env.update({"IOT_PARTITIONS_START": "2026-11-01-00:00", "PYTHONPATH": str(REPO_ROOT)})
    done = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(watched), *modules],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_code_location_loads_without_the_decoders_libraries() -> None:
    assert imported(["dagster_project.definitions"], ["polars", "pandera", "numpy"]) == []


def test_the_assets_still_reach_the_decoders_when_they_run() -> None:
    # what the assets import in their bodies exists and brings polars with it
    held = imported(
        ["dagster_project.definitions", "dagster_project.lib.batch", "dagster_project.lib.feedback"],
        ["polars", "pandera"],
    )
    assert held == ["pandera", "polars"]


def test_up_and_its_window_lines_hold_no_dagster() -> None:
    supervisor = [
        "iot_etl.up",
        "iot_etl.supervisor",
        "iot_etl.window_report",
        "iot_etl.code_server",
        "iot_etl.dagster_instance",
        # a window's label, imported by the first window line
        "dagster_project.lib.windows",
    ]
    assert imported(supervisor, ["dagster", "grpc", "sqlalchemy", "polars"]) == []
