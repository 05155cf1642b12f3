"""Timing the UI's own queries against the real `dagster-webserver` (started by `tests.support.webserver`)."""

from __future__ import annotations

import json
import os
import statistics
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from bench.runs_ui.ui_queries import ui_query

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
