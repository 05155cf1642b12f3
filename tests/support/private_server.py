"""The lifecycle every private test server shares: a temp dir, a free port, a log, `with` support.

`PrivateServer` holds what does not depend on the server: where it lives, its log, closing (stop and
delete the directory) and the context-manager protocol. `ProcessServer` adds a server that is one child
process of the test (Redis, Mosquitto): spawning it, waiting for its port, crash (`kill`) and clean stop
by a signal. PostgreSQL runs under `pg_ctl`, not as a child, so it implements `start`/`stop` itself.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.ports import free_port, wait_for_port


class StartedUntilClosed:
    """A `with` block around `start()` and `close()`: what fails to start is closed too."""

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PrivateServer(StartedUntilClosed):
    """A server on `host:port` whose files live in its own temporary directory."""

    name = "server"

    def __init__(self, *, host: str, port: int | None, log_name: str) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"private-{self.name}-"))
        self.log_path = self.workdir / log_name

    def start(self, timeout: float = 10.0) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class ProcessServer(PrivateServer):
    """A server that runs as one child process of the test."""

    def __init__(self, *, host: str, port: int | None, log_name: str) -> None:
        super().__init__(host=host, port=port, log_name=log_name)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _spawn(self, command: list[str], timeout: float) -> None:
        """Start `command` with its output in the log and wait until the port accepts connections."""
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir
            )
        try:
            wait_for_port(self.host, self.port, timeout=timeout, process=self._process)
        except (RuntimeError, TimeoutError) as exc:
            self.kill()
            raise RuntimeError(f"{self.name} did not start: {exc}\n{self.log_text()[-4000:]}") from exc

    def _take_process(self) -> subprocess.Popen[bytes] | None:
        """The live process, forgotten by this object (so a second stop does nothing), or None."""
        process, self._process = self._process, None
        return process if process is not None and process.poll() is None else None

    def _terminate(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        """SIGTERM, then SIGKILL if it does not exit within `timeout`."""
        process.send_signal(signal.SIGTERM)
        self._reap(process, timeout)

    @staticmethod
    def _reap(process: subprocess.Popen[bytes], timeout: float) -> None:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def kill(self) -> None:
        """Crash (SIGKILL): whatever the server had not written to disk is gone."""
        process = self._take_process()
        if process is not None:
            process.kill()
            process.wait(timeout=5)

    def __del__(self) -> None:  # last resort: never leave a server behind
        with contextlib.suppress(Exception):
            self.kill()
