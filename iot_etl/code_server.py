"""The one code server of `iot-etl up`: `dagster api grpc` serving the code location on a local port, and
the workspace file that points the daemon and the webserver at it.

Given the project's `workspace.yaml` (a Python module), the daemon and the webserver each start a code
server of their own, and the daemon replaces its code server every 60 s to pick up code changes: one
more interpreter importing Dagster and the code location every minute, for as long as the pipeline
runs, and two resident copies of the location. A code server that `up` starts once serves both. Code
changes take effect when `up` starts again (the UI's Reload re-reads this server, which keeps the code it
loaded); run workers import the code location afresh (see `dagster_project.run_launcher`).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

LOCATION_NAME = "iot_pipeline"
MODULE = "dagster_project.definitions"
ATTRIBUTE = "defs"
HOST = "127.0.0.1"


def code_server_argv(port: int, working_directory: Path) -> list[str]:
    return [
        str(Path(sys.executable).parent / "dagster"),
        "api",
        "grpc",
        # it answers at once and loads the location when first asked: a location that fails to load is
        # then an error the webserver shows (and `up` reports), not a server that never answers
        "--lazy-load-user-code",
        "--module-name",
        MODULE,
        "--attribute",
        ATTRIBUTE,
        "--working-directory",
        str(working_directory),
        "--location-name",
        LOCATION_NAME,
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]


def write_workspace(path: Path, port: int) -> Path:
    """A workspace file whose one code location is the code server on `port`."""
    workspace = {"load_from": [{"grpc_server": {"host": HOST, "port": port, "location_name": LOCATION_NAME}}]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# written by `iot-etl up` at each start: the code server it runs (see iot_etl/code_server.py)\n"
        + yaml.safe_dump(workspace, sort_keys=False),
        encoding="utf-8",
    )
    return path


def wait_serving(port: int, timeout_s: float, alive: Callable[[], bool]) -> None:
    """Return once the code server on `port` accepts connections; raise TimeoutError when the time is up
    and RuntimeError when the server exited first.

    A connection, not a gRPC ping: the server listens only once it serves (it loads the location lazily),
    and `up` need not import Dagster's gRPC client, which would stay in its memory while it runs."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not alive():
            raise RuntimeError("the code server exited while loading the code location")
        try:
            with socket.create_connection((HOST, port), timeout=2.0):
                return
        except OSError:  # refused until it listens
            if time.monotonic() > deadline:
                raise TimeoutError(f"the code server did not answer within {timeout_s:.0f} s") from None
            time.sleep(0.5)
