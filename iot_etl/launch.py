"""`iot-etl up` started as a user starts it, for benchmarks and tests that drive whole stacks: returned
once it printed the UI address."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from iot_etl.children import REPO_ROOT


def launch_up(
    env: Mapping[str, str],
    *args: str,
    timeout_s: float = 120.0,
    on_line: Callable[[str], object] | None = None,
    cwd: Path = REPO_ROOT,
) -> tuple[subprocess.Popen, str]:
    """Start `iot-etl up ARGS` in its own process group, as a user would, and return it once it printed the
    UI address, with everything it printed until then (benchmarks and tests drive whole stacks with it).
    Its later output is drained in the background so that it never blocks on a full pipe, each line
    handed to `on_line` if given. `cwd` holding a copy of the repository runs that copy's code."""
    process = subprocess.Popen(
        [sys.executable, "-m", "iot_etl.cli", "up", *args],
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    banner = ""
    deadline = time.monotonic() + timeout_s
    while "Dagster UI: http://" not in banner:
        line = process.stdout.readline()
        if not line or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            raise RuntimeError(f"iot-etl up did not bring the UI up:\n{banner}")
        banner += line
    drain = process.stdout.read if on_line is None else lambda: [on_line(x) for x in process.stdout]
    threading.Thread(target=drain, daemon=True).start()
    return process, banner
