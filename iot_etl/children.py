"""The supervisor's children: what one is, where they run, and stopping a group of them.

Each child runs in its own process group, so that a stop reaches its children too (run workers, code
servers); a stopped child's whole group is killed and waited for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: Where every child runs: the repository, whose packages `python -m` and the code location import.
REPO_ROOT = Path(__file__).resolve().parent.parent

STOP_TIMEOUT_S = 8.0
#: services stop last and may take longer: the broker writes its sessions and queues to disk on SIGTERM
#: (killed while writing, it comes back with its last autosave), PostgreSQL checkpoints
SERVICE_STOP_TIMEOUT_S = 30.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    # services (embedded PostgreSQL/Redis, the broker) stop after the pipeline's processes
    service: bool = False
    # producers (the simulator) stop before the pipeline's processes: what they sent is acknowledged while
    # the listener still takes it
    producer: bool = False
    stop_signal: int = signal.SIGTERM
    user: str | None = None
    log: Path | None = None
    # output through `up`: all of it into `log`, warnings and errors onto `up`'s output (child_output)
    pumped: bool = False
    # variables of this child's own, over the supervisor's environment (a listener replica's name)
    env: dict[str, str] = field(default_factory=dict)
    # started again when it dies (a listener replica: its session holds its share of the messages)
    restart: bool = False
    started_at: float | None = None


def stop_children(children: list[Child], say: Callable[[str], None]) -> None:
    """Signal every child's process group, wait for each (the services longer), kill what is left."""
    for child in children:
        if child.process and child.process.poll() is None:
            _signal_group(child.process, child.stop_signal)
    signalled = time.monotonic()
    for child in children:
        if not child.process:
            continue
        timeout_s = SERVICE_STOP_TIMEOUT_S if child.service else STOP_TIMEOUT_S
        try:
            child.process.wait(max(0.1, signalled + timeout_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{child.name} did not stop in {timeout_s:.0f} s: killing it")
            _signal_group(child.process, signal.SIGKILL)
            child.process.wait(5)
        # whatever the child left in its group (run workers, code servers) goes too
        _signal_group(child.process, signal.SIGKILL)
    for child in children:
        if child.process:
            _wait_group_gone(child.process.pid, timeout_s=3.0)


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    """SIGKILL is asynchronous: return once no process of the group is left (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
