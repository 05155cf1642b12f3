"""The real `dagster-webserver` on the project's workspace (`workspace.yaml`), up until the code location
has loaded, stopped with its process group afterwards: for UI tests and the UI benchmark."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from iot_etl.code_location import location_state
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _loaded(port: int, process: subprocess.Popen[bytes], log: Path) -> bool:
    """Whether the code location has loaded; raises when it failed to load or the webserver died."""
    if process.poll() is not None:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"dagster-webserver exited with {process.returncode}:\n{tail}")
    try:
        state = location_state(f"http://127.0.0.1:{port}")
    except OSError:
        return False
    if state.error:
        raise RuntimeError(state.error)
    return state.loaded


@contextmanager
def webserver(env: dict[str, str], port: int, timeout_s: float = 600) -> Iterator[float]:
    """`dagster-webserver` with `env` on `port`; yields the seconds it took to load the code location."""
    started = time.monotonic()
    with tempfile.NamedTemporaryFile(prefix="dagster-webserver-", suffix=".log") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml", "-p", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            if not wait_until(lambda: _loaded(port, process, Path(log.name)), timeout_s, interval_s=1):
                raise RuntimeError(f"dagster-webserver did not load the code location in {timeout_s} s")
            yield time.monotonic() - started
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(60)
