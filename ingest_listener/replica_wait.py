"""The replicas' confirmation of the listener's writes (`WAIT`) before they are acknowledged to the broker.

Redis replicates asynchronously: a master that dies right after an XADD can take it along, and the replica
promoted in its place never had it. Ending a master's pipeline with `WAIT <replicas> <timeout>` makes the
entries count as written only once that many replicas hold them, so a failover cannot lose what the
broker was told is safe.

A master with no replica connected at all (its replica is gone, or it is a promoted replica whose old
master has not come back) can confirm nothing, and waiting for it would stop every shard's writes: its
writes are acknowledged without confirmation, with a warning, and its replicas are asked for again every
`RECHECK_S`. Replicas that are connected but behind are waited for, `WAIT` after `WAIT` on the same
connection (WAIT covers the writes of the connection it is sent on), for up to `GIVE_UP_S`; entries still
unconfirmed then come back as `ReplicasBehindError` and are written again (at-least-once).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from hiredis import pack_command

from ingest_listener.redis_replies import read_reply

log = logging.getLogger(__name__)

#: How long replicas that are connected but behind are waited for before the batch is written again.
GIVE_UP_S = 10.0
#: How long a master found without replicas is written to unconfirmed before they are asked for again.
RECHECK_S = 5.0


class ReplicasBehindError(redis.ResponseError):
    """Fewer replicas than asked confirmed a batch within `GIVE_UP_S`: it does not count as written."""


class ReplicaWait:
    """`WAIT` after each master's XADDs, with what is known about masters that have no replica."""

    def __init__(self, replicas: int, timeout_ms: int) -> None:
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self._alone_until: dict[str, float] = {}  # master address -> when to ask for its replicas again

    def command(self, address: str) -> bytes:
        """What ends the pipeline to the master at `address` (nothing while it is known to be alone)."""
        if not self.replicas or time.monotonic() < self._alone_until.get(address, 0.0):
            return b""
        return pack_command(("WAIT", self.replicas, self.timeout_ms))

    def confirm(
        self, conn: redis.connection.AbstractConnection, address: str, replies: list[Any]
    ) -> list[Any]:
        """`replies` of the XADDs just read from `conn`, each written entry turned into an error unless the
        replicas confirmed it (call only when `command(address)` was sent)."""
        confirmed = read_reply(conn)
        give_up = time.monotonic() + GIVE_UP_S
        while isinstance(confirmed, int) and confirmed < self.replicas:
            if not self._has_replicas(conn, address) or time.monotonic() > give_up:
                break
            conn.send_command("WAIT", self.replicas, self.timeout_ms)
            confirmed = read_reply(conn)
        if isinstance(confirmed, int) and (confirmed >= self.replicas or address in self._alone_until):
            return replies
        error = (
            confirmed
            if isinstance(confirmed, Exception)
            else ReplicasBehindError(
                f"{address}: {confirmed} of {self.replicas} replicas confirmed the writes "
                f"within {GIVE_UP_S:.0f} s"
            )
        )
        return [r if isinstance(r, Exception) else error for r in replies]

    def _has_replicas(self, conn: redis.connection.AbstractConnection, address: str) -> bool:
        """Whether the master has any replica connected (`ROLE`); when not, it is written to unconfirmed."""
        conn.send_command("ROLE")
        role = read_reply(conn)
        if isinstance(role, Exception) or not isinstance(role, list) or role[0] != b"master" or role[2]:
            self._alone_until.pop(address, None)
            return True
        if address not in self._alone_until:
            log.warning(
                "Redis master %s has no replica: its writes are acknowledged without a replica's "
                "confirmation (a failure of it now loses them) until a replica is connected again",
                address,
            )
        self._alone_until[address] = time.monotonic() + RECHECK_S
        return False
