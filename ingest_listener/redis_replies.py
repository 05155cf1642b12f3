"""Reading pipelined replies off a Redis connection one at a time."""

from __future__ import annotations

from typing import Any

import redis


def read_reply(conn: redis.connection.AbstractConnection) -> Any:
    """The next reply (an entry ID, a count, a role...), or the error Redis answered for that command."""
    try:
        return conn.read_response()
    except redis.ResponseError as exc:
        return exc
