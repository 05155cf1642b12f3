"""`python -m ingest_listener` as a process of its own, as a deployment runs it: started with an
environment, its output appended to a log, SIGKILLed (no flush, no acknowledgement, no DISCONNECT) or
stopped with SIGTERM (flush, acknowledge, disconnect)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path


class ListenerSubprocess:
    """One listener process; `spawn()` again after `kill()` runs it anew with the same environment."""

    def __init__(self, env: dict[str, str], log_path: Path, cwd: Path | None = None) -> None:
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ingest_listener"],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.process

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit status (that of an earlier exit if it had ended; None if never
        started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait(10)
        return self.process.returncode
