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
`PrivateRedis(aclfile=path)` loads its users from an ACL file (`extra_args` adds any other options); an
anonymous client cannot SHUTDOWN it, so `stop()` ends it with SIGTERM (no snapshot: use `aof=True` to keep
data across a restart), and `url_for(user, password)` is the URL of one of its users.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.private_server import ProcessServer
from tests.support.waiting import wait_until

_NO_RETRY = Retry(NoBackoff(), 0)  # redis-py's default retries would re-send SHUTDOWN with backoff


class PrivateRedis(ProcessServer):
    """A `redis-server` process on a free port in a temporary directory."""

    name = "redis-server"

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        binary: str = "redis-server",
        aof: bool = False,
        aclfile: Path | None = None,
        extra_args: Sequence[str] = (),
    ):
        super().__init__(host=host, port=port, log_name="redis.log")
        self.aof = aof
        self.binary = binary
        self.aclfile = aclfile
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def url_for(self, user: str, password: str) -> str:
        """The URL of one of the server's ACL users."""
        return f"redis://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}/0"

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
            *(["--aclfile", str(self.aclfile)] if self.aclfile is not None else []),
            *self.extra_args,
        ]  # fmt: skip
        self._spawn(command, timeout)
        try:
            self._wait_loaded(timeout)
        except (TimeoutError, redis.RedisError) as exc:
            self.kill()
            raise RuntimeError(f"redis-server did not load: {exc}\n{self.log_text()[-4000:]}") from exc
        return self

    def stop(self, *, keep_data: bool = True, timeout: float = 10.0) -> None:
        """Shut the server down; with `keep_data` its data set is saved and comes back on `start()`."""
        process = self._take_process()
        if process is not None and self.aclfile is not None:
            self._terminate(process, timeout)
        elif process is not None:
            with (
                contextlib.suppress(redis.RedisError),
                self.client(socket_timeout=timeout, retry=_NO_RETRY) as client,
            ):
                client.shutdown(save=keep_data, nosave=not keep_data)
            self._reap(process, timeout)
        if not keep_data:
            (self.workdir / "dump.rdb").unlink(missing_ok=True)

    def restart(self, *, keep_data: bool = True) -> None:
        self.stop(keep_data=keep_data)
        self.start()

    def close(self) -> None:
        """Stop the server (dropping its data) and delete its directory."""
        self.stop(keep_data=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _wait_loaded(self, timeout: float) -> None:
        """PING answers LOADING while a snapshot is read; wait for a real PONG. With an ACL file an anonymous
        PING gets NOAUTH, which Redis answers even while loading: such a server counts as ready once it
        answers at all."""
        with self.client(socket_timeout=2, retry=_NO_RETRY) as client:

            def loaded() -> bool:
                try:
                    client.ping()
                except redis.AuthenticationError:
                    if self.aclfile is None:
                        raise
                except redis.BusyLoadingError:
                    return False
                return True

            if not wait_until(loaded, timeout, interval_s=0.02):
                raise TimeoutError(f"still loading its data set after {timeout} s")
