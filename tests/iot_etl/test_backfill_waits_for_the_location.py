"""`iot-etl backfill` waits for a webserver that has just started to load the code location (it answers
500 or `LOADING` meanwhile and would refuse the launch) and says in one line when loading failed: against a
small HTTP server on loopback that answers as Dagster's webserver does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from iot_core.errors import UserFacingError
from iot_etl.backfill import DagsterUi


def workspace(status: str, error: str | None = None) -> dict:
    location = (
        {"__typename": "PythonError", "message": error} if error else {"__typename": "RepositoryLocation"}
    )
    entry = {
        "name": "iot_pipeline",
        "loadStatus": status,
        "locationOrLoadError": location if error or status == "LOADED" else None,
    }
    return {"data": {"workspaceOrError": {"__typename": "Workspace", "locationEntries": [entry]}}}


@contextmanager
def answering(answers: list[tuple[int, dict]]) -> Iterator[tuple[str, list[int]]]:
    """A server that gives `answers` in turn (the last one from then on); yields its URL and a count."""
    asked: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            code, body = answers[min(len(asked), len(answers) - 1)]
            asked.append(code)
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def test_backfill_waits_while_the_webserver_loads_the_code_location() -> None:
    answers = [(500, {}), (500, {}), (200, workspace("LOADING")), (200, workspace("LOADED"))]
    with answering(answers) as (url, asked):
        DagsterUi(url).wait_loaded(timeout_s=30, poll_s=0.05)
    assert asked == [500, 500, 200, 200]


def test_backfill_says_in_one_line_why_the_code_location_did_not_load() -> None:
    failed = workspace("LOADED", "ModuleNotFoundError: No module named 'dagster_project'\n  File ...")
    with answering([(200, failed)]) as (url, _), pytest.raises(UserFacingError) as raised:
        DagsterUi(url).wait_loaded(timeout_s=30, poll_s=0.05)
    assert "could not load the code location" in str(raised.value)
    assert "No module named 'dagster_project'" in str(raised.value) and "File ..." not in str(raised.value)


def test_backfill_gives_up_on_a_location_that_never_loads() -> None:
    with answering([(200, workspace("LOADING"))]) as (url, _), pytest.raises(UserFacingError) as raised:
        DagsterUi(url).wait_loaded(timeout_s=0.3, poll_s=0.05)
    assert "has not loaded the code location in 0 s" in str(raised.value)
