"""Whether a server answers at an address, and waiting for a started one to answer."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import redis

from iot_core.redis_client import split_nodes
from iot_etl.startup import CannotStart

READY_TIMEOUT_S = 120.0


def postgres_answers(url: str) -> bool:
    """Whether a PostgreSQL server answers at `url`: one that refuses the URL's database or password
    answers too (`up`'s checks then say what is wrong)."""
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError as exc:
        return any(answer in str(exc) for answer in ("does not exist", "password"))


def redis_answers(url: str) -> bool:
    """Whether the Redis at `url` (its first node, for a URL naming several) answers PING."""
    client = redis.Redis.from_url(split_nodes(url)[0], socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
        return True
    except redis.RedisError:
        return False
    finally:
        client.close()


def wait_ready(
    check: Callable[[], bool], what: str, alive: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S
) -> None:
    """Poll `check()` until it is true; raise CannotStart when `alive()` turns false or time is up."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if not alive():
            raise CannotStart(f"{what} exited while starting")
        if time.monotonic() > deadline:
            raise CannotStart(f"{what} did not answer within {timeout_s:.0f} s")
        time.sleep(0.2)
