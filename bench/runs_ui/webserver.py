"""The real `dagster-webserver` on the project's workspace, and timing the UI's own queries against it."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.runs_ui.ui_queries import ui_query
from iot_etl.code_location import location_state

ROOT = Path(__file__).resolve().parents[2]
TELEMETRY = {"path": ["telemetry"]}
FINISHED_VIEW = "ROOTS"  # the Runs page's default view: runs and backfills, not a backfill's runs


@dataclass(frozen=True, slots=True)
class UiQuery:
    label: str
    name: str
    variables: dict[str, Any]


#: What the Runs page, the asset page of `telemetry` and its partitions bar ask when opened.
QUERIES = (
    UiQuery("runs page, no filter", "RunsFeedRootQuery", {"limit": 30, "filter": {}, "view": FINISHED_VIEW}),
    UiQuery(
        "runs page, tag iot/kind=micro",
        "RunsFeedRootQuery",
        {"limit": 30, "filter": {"tags": [{"key": "iot/kind", "value": "micro"}]}, "view": FINISHED_VIEW},
    ),
    UiQuery(
        "runs page, tab counts",
        "RunFeedTabsCountQuery",
        {
            "queuedFilter": {"statuses": ["QUEUED"]},
            "inProgressFilter": {"statuses": ["STARTED", "STARTING", "CANCELING"]},
            "view": FINISHED_VIEW,
        },
    ),
    UiQuery("asset page: definition", "AssetViewDefinitionQuery", {"assetKey": TELEMETRY}),
    UiQuery("asset page: latest events", "AssetOverviewMetadataEventsQuery", {"assetKey": TELEMETRY}),
    UiQuery(
        "asset page: events (100)",
        "RecentAssetEventsQuery",
        {"assetKey": TELEMETRY, "eventTypeSelectors": ["MATERIALIZATION", "OBSERVATION"], "limit": 100},
    ),
    UiQuery("partitions bar (PartitionHealth)", "PartitionHealthQuery", {"assetKey": TELEMETRY}),
)


def post(port: int, query: str, variables: dict[str, Any], timeout_s: float = 600) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def _loaded(port: int, process: subprocess.Popen[bytes]) -> bool:
    """Whether the code location has loaded; raises when it failed to load or the webserver died."""
    if process.poll() is not None:
        raise RuntimeError(f"dagster-webserver exited with {process.returncode}")
    try:
        state = location_state(f"http://127.0.0.1:{port}")
    except OSError:
        return False
    if state.error:
        raise RuntimeError(state.error)
    return state.loaded


@contextmanager
def webserver(env: dict[str, str], port: int, timeout_s: float = 600) -> Iterator[float]:
    """`dagster-webserver` for the workspace with `env`; yields the seconds it took to load the code."""
    started = time.monotonic()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while not _loaded(port, process):
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"dagster-webserver did not load the code location in {timeout_s} s")
            time.sleep(1)
        yield time.monotonic() - started
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)


def time_query(port: int, query: UiQuery, repeat: int) -> dict[str, Any]:
    """The first call (cold: caches such as the partition status are built) and `repeat` more."""
    document = ui_query(query.name)
    seconds: list[float] = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        result = post(port, document, query.variables)
        seconds.append(time.perf_counter() - start)
        if result.get("errors"):
            raise RuntimeError(f"{query.label}: {result['errors']}")
    warm = seconds[1:]
    return {
        "label": query.label,
        "query": query.name,
        "first_s": round(seconds[0], 3),
        "median_s": round(statistics.median(warm), 3),
        "max_s": round(max(warm), 3),
        "load_avg": os.getloadavg()[0],
    }
