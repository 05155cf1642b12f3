"""`PrivateRedis`: a real `redis-server` of a test's own, to simulate Redis outages.

Why not the system Redis: an outage test has to stop and start the server under a running listener.

Usage::

    with PrivateRedis() as redis_server:
        settings = Settings(redis_url=redis_server.url, ...)
        client = redis_server.client()
        redis_server.stop()      # outage; the data set is saved to the temp dir (SHUTDOWN SAVE) ...
        redis_server.start()     # ... and loaded again: entries written before the outage survive
        redis_server.stop(keep_data=False)   # an outage that also loses everything

The server runs `redis-server --port N --save "" --appendonly no` (no background persistence); only
an explicit `stop()` writes a snapshot, so a restart looks like an outage of a durable Redis.
`PrivateRedis(aof=True)` runs with `--appendonly yes --appendfsync always` instead: every acknowledged
write is on disk, so `kill()` (SIGKILL) then `start()` on the same directory loses nothing.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.ports import free_port, wait_for_port

_NO_RETRY = Retry(NoBackoff(), 0)  # redis-py's default retries would re-send SHUTDOWN with backoff


class PrivateRedis:
    """A `redis-server` process on a free port in a temporary directory."""

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        binary: str = "redis-server",
        aof: bool = False,
    ):
        self.host = host
        self.aof = aof
        self.port = port or free_port(host)
        self.binary = binary
        self.workdir = Path(tempfile.mkdtemp(prefix="private-redis-"))
        self.log_path = self.workdir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def env(self) -> dict[str, str]:
        """`IOT_*` variables pointing a subprocess's `Settings` at this server."""
        return {"IOT_REDIS_URL": self.url}

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new client of this server (bytes responses unless told otherwise)."""
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def start(self, timeout: float = 10.0) -> PrivateRedis:
        """Start the server (loading the snapshot a previous `stop()` saved) and wait for its port."""
        if self.running:
            return self
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            *(["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]),
            "--dir", str(self.workdir),
            "--dbfilename", "dump.rdb",
            "--daemonize", "no",
            "--protected-mode", "no",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir
            )
        try:
            wait_for_port(self.host, self.port, timeout=timeout, process=self._process)
            self._wait_loaded(timeout)
        except (RuntimeError, TimeoutError, redis.RedisError) as exc:
            self.kill()
            raise RuntimeError(f"redis-server did not start: {exc}\n{self.log_text()[-4000:]}") from exc
        return self

    def stop(self, *, keep_data: bool = True, timeout: float = 10.0) -> None:
        """Shut the server down; with `keep_data` its data set is saved and comes back on `start()`."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with (
                contextlib.suppress(redis.RedisError),
                self.client(socket_timeout=timeout, retry=_NO_RETRY) as client,
            ):
                client.shutdown(save=keep_data, nosave=not keep_data)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=5)
        if not keep_data:
            (self.workdir / "dump.rdb").unlink(missing_ok=True)

    def kill(self) -> None:
        """Crash (SIGKILL): the data set is lost unless an earlier `stop()` saved it."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=5)

    def restart(self, *, keep_data: bool = True) -> None:
        self.stop(keep_data=keep_data)
        self.start()

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.stop(keep_data=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> PrivateRedis:
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

    def __del__(self) -> None:  # last resort: never leave a server behind
        with contextlib.suppress(Exception):
            self.kill()

    def _wait_loaded(self, timeout: float) -> None:
        """PING answers LOADING while a snapshot is read; wait for a real PONG."""
        import time

        deadline = time.monotonic() + timeout
        with self.client(socket_timeout=2, retry=_NO_RETRY) as client:
            while True:
                try:
                    client.ping()
                    return
                except redis.BusyLoadingError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
