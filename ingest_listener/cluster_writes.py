"""The listener's pipelined XADDs in a Redis Cluster: one pipeline per master, each on its own connection.

redis-py's cluster pipeline builds and checks every command in Python; the writer packs its XADDs itself
(`StreamWriter.send`), so here they are only grouped by the master serving each entry's stream, as the
client's slot map has it. Every master's pipeline is sent and read on its own (non-transactional): a
master that cannot be reached, or answers MOVED/ASK/CLUSTERDOWN/TRYAGAIN while slots move or a replica
takes over, answers only its own entries with that error. Those are not reported written (so not
acknowledged) and are kept and written again; the slot map is read anew from the cluster first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import ConnectionPool
from redis.exceptions import AskError, ClusterDownError, SlotNotCoveredError, TryAgainError

if TYPE_CHECKING:
    from ingest_listener.stream_writer import Entry

log = logging.getLogger(__name__)

#: Replies that mean the client's slot map is out of date (MovedError is an AskError).
STALE_MAP_REPLIES = (AskError, ClusterDownError, TryAgainError)
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)

Send = Callable[[ConnectionPool, Sequence["Entry"]], list[Any]]


def write_by_master(client: RedisCluster, entries: Sequence[Entry], send: Send) -> list[Any]:
    """`send` each master's entries to it; per entry, in order, its ID or the error that kept it out."""
    try:
        groups: dict[ClusterNode, list[int]] = {}
        for i, entry in enumerate(entries):
            groups.setdefault(client.get_node_from_key(entry.stream), []).append(i)
    except SlotNotCoveredError as exc:
        refresh_slot_map(client)
        raise redis.ConnectionError(f"the cluster serves no node for a stream: {exc}") from None
    results: list[Any] = [None] * len(entries)
    stale = False
    for node, positions in groups.items():
        try:
            pool = client.get_redis_connection(node).connection_pool
            replies = send(pool, [entries[i] for i in positions])
        except _UNREACHABLE as exc:
            replies = [redis.ConnectionError(f"{node.name}: {exc}")] * len(positions)
            stale = True
        for i, reply in zip(positions, replies, strict=True):
            results[i] = reply
            stale = stale or isinstance(reply, STALE_MAP_REPLIES)
    if stale:
        refresh_slot_map(client)
    return results


def refresh_slot_map(client: RedisCluster) -> None:
    """Read the slot map again from any node that answers (kept as it was when none does)."""
    try:
        client.nodes_manager.initialize()
    except Exception as exc:  # the next write tries again; the writer logs the outage itself
        log.debug("could not read the cluster's slot map: %s", exc)
