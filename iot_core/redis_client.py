"""The one way the product makes a Redis client, standalone or Redis Cluster, and the clock of the streams.

`IOT_REDIS_MODE=cluster` makes every part (listener, sensor, assets, compaction, `status`, the memory check)
use `redis.cluster.RedisCluster`: the URL names any node, its user, password and TLS options apply to
every node, and commands on a stream key go to the master serving the key's slot.

The clock that decides which windows have closed is Redis's own, since Redis assigns the entry ids: XADD
with `*` gives `max(the node's clock in ms, the stream's last id)`, so once a node's `TIME` is past `t`, no
entry of a stream on that node can get an id below `t` any more. With streams on several masters, the
window clock is the smallest `TIME` of the masters serving the shards (`earliest_ms`): every one of those
clocks is then past it, so a window it calls closed is closed on every shard. A node whose clock is behind
only delays closing; one ahead cannot close a window early, since the others hold the minimum back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterError, RedisClusterException, SlotNotCoveredError, TryAgainError
from redis.retry import Retry

RedisClient = redis.Redis | RedisCluster

#: Errors that mean Redis (or a node of the cluster, or its slot map while a failover settles) is away for
#: now, not a bug or a refused command.
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterError,
    TryAgainError,
    SlotNotCoveredError,
)

MODES = ("standalone", "cluster")


def redis_client(url: str, mode: str, *, retries: int | None = None, **options: Any) -> RedisClient:
    """A client of the Redis at `url` (`mode` `cluster`: any node of a cluster, or several, comma-separated:
    `redis://user:password@host1:7000,host2:7000/0`, so that a client made while one of them is down still
    finds the cluster). `retries` 0 turns the client's own retries off (the caller retries); `options` are
    redis-py's connection options.

    A cluster client asks a node for the slot map when it is made: a cluster that cannot be reached raises
    `redis.ConnectionError`, as a standalone client does at its first command."""
    if mode not in MODES:
        raise ValueError(f"unknown Redis mode {mode!r}: one of {', '.join(MODES)}")
    retry = Retry(NoBackoff(), retries) if retries is not None else None
    if mode == "standalone":
        return redis.Redis.from_url(url, **({"retry": retry} if retry else {}), **options)
    first, others = split_nodes(url)
    startup = [ClusterNode(host, port) for host, port in others]
    try:
        return RedisCluster.from_url(
            first, startup_nodes=startup, **({"retry": retry} if retry else {}), **options
        )
    except RedisClusterException as exc:
        raise redis.ConnectionError(f"Redis Cluster at {_address(url)} unreachable: {exc}") from None


def split_nodes(url: str) -> tuple[str, list[tuple[str, int]]]:
    """A URL naming several nodes (`scheme://credentials@host1:port1,host2:port2/path`) as the URL of the
    first and the other nodes' addresses; a URL of one node as itself and none."""
    scheme, sep, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    hosts, slash, path = location.partition("/")
    if not sep or "," not in hosts:
        return url, []
    first, *others = hosts.split(",")
    nodes = []
    for other in others:
        host, _, port = other.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a node of the Redis URL is not host:port: {other!r}")
        nodes.append((host, int(port)))
    return f"{scheme}://{credentials}{at}{first}{slash}{path}", nodes


def _address(url: str) -> str:
    """host:port of a Redis URL, without its user or password."""
    return url.rsplit("@", 1)[-1].split("://", 1)[-1].split("/", 1)[0]


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, RedisCluster)


def shard_masters(client: RedisCluster, streams: Iterable[str]) -> dict[ClusterNode, list[str]]:
    """The masters serving the streams' slots now, each with its streams."""
    masters: dict[ClusterNode, list[str]] = {}
    for stream in streams:
        masters.setdefault(client.get_node_from_key(stream), []).append(stream)
    return masters


def time_ms(reply: tuple[Any, Any]) -> int:
    """A `TIME` reply (seconds, microseconds) in milliseconds."""
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def earliest_ms(clocks: Iterable[int]) -> int:
    """The window clock of streams on several nodes: the earliest of their clocks (see the module)."""
    values = list(clocks)
    if not values:
        raise ValueError("no node serves the streams")
    return min(values)


def streams_clock_ms(client: RedisClient, streams: Iterable[str]) -> int:
    """Redis's clock for the windows of `streams`: `TIME` standalone; in a cluster the earliest `TIME` of
    the masters serving the streams, each asked itself."""
    if not isinstance(client, RedisCluster):
        return time_ms(client.time())
    masters = shard_masters(client, streams)
    return earliest_ms(time_ms(client.time(target_nodes=node)) for node in masters)
