"""What `iot-etl up` checks before it starts anything, each failure one line a user can act on."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
from pathlib import Path
from typing import IO

import psycopg
import redis

from iot_core.db_errors import postgres_refusal
from iot_core.redact import redact_text, redact_url, url_password
from iot_core.redis_client import redis_client
from iot_core.settings import Settings
from iot_etl.ports import tcp_socket

CONNECT_TIMEOUT_S = 5


class CannotStart(RuntimeError):
    """`iot-etl up` cannot start; the message is the one line the user sees."""


def require_port_free(host: str, port: int, setting: str) -> None:
    """Bind the port the way a server does (SO_REUSEADDR: a port in TIME_WAIT counts as free)."""
    with tcp_socket(host) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise CannotStart(
                f"{host}:{port} is already in use ({exc.strerror}); stop what holds it or set {setting}"
            ) from None


def require_redis(url: str, mode: str = "standalone") -> None:
    try:
        client = redis_client(
            url, mode, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
        )
    except redis.RedisError as exc:
        raise CannotStart(
            f"Redis at {redact_url(url)} is unreachable ({_one_line(exc, url)}); check IOT_REDIS_URL"
        ) from None
    try:
        client.ping()
    except redis.RedisError as exc:
        raise CannotStart(
            f"Redis at {redact_url(url)} is unreachable ({_one_line(exc, url)}); check IOT_REDIS_URL"
        ) from None
    finally:
        client.close()


def require_postgres(url: str, setting: str) -> None:
    """The server must answer; the database itself may be missing (`db migrate` creates it)."""
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S):
            return
    except psycopg.OperationalError as exc:
        refusal = postgres_refusal(_one_line(exc, url), setting)
        if refusal is not None and refusal.kind == "database":
            return
        if refusal is not None:
            raise CannotStart(
                f"PostgreSQL at {redact_url(url)} refused the connection: {refusal.said}; {refusal.todo}"
            ) from None
        raise CannotStart(
            f"PostgreSQL at {redact_url(url)} is unreachable ({_one_line(exc, url)}); check {setting}"
        ) from None


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps a server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_private_ui(settings: Settings) -> None:
    """The Dagster UI has no login: it listens beyond loopback only behind a named authenticating proxy."""
    host = settings.webserver_host
    if is_loopback(host) or settings.webserver_auth_proxy:
        return
    raise CannotStart(
        f"IOT_WEBSERVER_HOST={host} would open the Dagster UI, which has no login, to the network; keep it "
        "on 127.0.0.1, or put an authenticating proxy in front of it and name it in IOT_WEBSERVER_AUTH_PROXY "
        "(docs/security.md)"
    )


def check_ports(settings: Settings) -> None:
    """The ports `up`'s own servers listen on are free."""
    require_port_free(settings.webserver_host, settings.webserver_port, "IOT_WEBSERVER_PORT")
    port = settings.listener_metrics_port
    for i in range(settings.listener_replicas if port else 0):
        require_port_free("0.0.0.0", port + i, "IOT_LISTENER_METRICS_PORT" + (f" + {i}" if i else ""))


def check_services(settings: Settings) -> None:
    """Everything `up` starts listens on a free port and finds the services it needs."""
    check_ports(settings)
    require_redis(settings.redis_url.get_secret_value(), settings.redis_mode)
    if settings.database_owner_url:  # `up` migrates as the owner, which creates the writer's role
        require_postgres(settings.database_owner_url.get_secret_value(), "IOT_DATABASE_OWNER_URL")
    else:
        require_postgres(settings.database_url.get_secret_value(), "IOT_DATABASE_URL")
    if settings.dagster_pg_url:
        require_postgres(settings.dagster_pg_url.get_secret_value(), "IOT_DAGSTER_PG_URL")


class StackLock:
    """One `iot-etl up` per Dagster home: an exclusive flock on `up.lock`, which holds the owner's pid.

    The kernel drops the lock when its holder dies however it dies, so a stale file never blocks a start."""

    def __init__(self, home: Path) -> None:
        self.path = home / "up.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise CannotStart(
                f"another iot-etl up (pid {holder}) is running with {self.path.parent}; stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _one_line(exc: BaseException, url: str) -> str:
    """The error's text on one line, without `url`'s password (drivers can quote the URL)."""
    return redact_text(" ".join(str(exc).split()) or type(exc).__name__, [url_password(url)])
