"""Whether the Dagster webserver has loaded the code location, asked the way the UI asks (GraphQL)."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass

QUERY = """{ workspaceOrError { __typename
  ... on Workspace { locationEntries { name loadStatus
      locationOrLoadError { __typename ... on PythonError { message } } } }
  ... on PythonError { message } } }"""


@dataclass(frozen=True)
class LocationState:
    """`loaded` once every location is; `error` holds the first location's loading error, in one line."""

    loaded: bool
    error: str | None = None


def location_state(ui_url: str, timeout_s: float = 10.0) -> LocationState:
    """Raises OSError while the webserver does not answer."""
    request = urllib.request.Request(
        f"{ui_url}/graphql",
        data=json.dumps({"query": QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        workspace = json.load(response)["data"]["workspaceOrError"]
    if workspace["__typename"] == "PythonError":
        return LocationState(False, one_line(workspace["message"]))
    entries = workspace["locationEntries"]
    for entry in entries:
        location = entry["locationOrLoadError"]
        if location and location["__typename"] == "PythonError":
            return LocationState(False, f"code location {entry['name']}: {one_line(location['message'])}")
    loaded = bool(entries) and all(
        e["loadStatus"] == "LOADED" and e["locationOrLoadError"] is not None for e in entries
    )
    return LocationState(loaded)


def one_line(message: str) -> str:
    """A loading error's message is a whole traceback summary; its first non-empty line says what failed."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"
