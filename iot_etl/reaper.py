"""Children of `iot-etl up` die with it, even when it is SIGKILLed and has no chance to stop them.

Two mechanisms, because one does not reach far enough:
- each direct child asks the kernel for SIGTERM when its parent dies (Linux `PR_SET_PDEATHSIG`), which
  reaches the listener, the Dagster webserver and daemon, but not what they started (code servers, run
  workers), which the kernel re-parents and leaves running;
- every child leads its own process group, and a small reaper process, in its own session, holds the read
  end of a pipe from the supervisor with the groups' ids. The kernel closes the pipe when the supervisor
  dies however it dies; on end-of-file the reaper signals every group: SIGTERM, then SIGKILL to what is left.

Run as `python -m iot_etl.reaper`; it imports nothing heavy so it starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import IO

PR_SET_PDEATHSIG = 1
GRACE_S = 8.0
# loaded here, in the parent: the child only calls into it between fork and exec
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(parent_pid: int) -> None:
    """`preexec_fn` for a child of `parent_pid`: SIGTERM it when that parent dies (Linux only; elsewhere the
    reaper alone does it). A parent that died before the request took effect makes the child exit at once."""
    if _LIBC is None:
        return
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_groups(pgids: list[int], grace_s: float = GRACE_S) -> None:
    """SIGTERM every group, give them `grace_s` to go, then SIGKILL what is left and wait until it is gone."""
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(group_alive(p) for p in pgids):
        time.sleep(0.1)
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(group_alive(p) for p in pgids):
        time.sleep(0.05)


class Reaper:
    """The supervisor's end: start the reaper, then tell it each child's process group."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "iot_etl.reaper"],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a signal to the supervisor's group (Ctrl-C, killpg) does not reach it
        )
        self._pipe: IO[str] = self.process.stdin  # type: ignore[assignment]

    def watch(self, pgid: int) -> None:
        self._pipe.write(f"{pgid}\n")
        self._pipe.flush()

    def close(self) -> None:
        """After an orderly stop: the reaper finds the groups gone and exits."""
        with contextlib.suppress(OSError):
            self._pipe.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(GRACE_S + 10)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    pgids = [int(line) for line in sys.stdin if line.strip()]
    kill_groups(pgids)


if __name__ == "__main__":
    main()
