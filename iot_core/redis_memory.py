"""How close Redis is to its `maxmemory`: read with `INFO memory`, judged against `PRESSURE_SHARE`.

With `maxmemory` and the `noeviction` policy a full Redis refuses XADD: the listener stops acknowledging
(the broker keeps the messages) until compaction trims. Above `PRESSURE_SHARE` compaction trims every
safely archived entry, whatever `IOT_STREAM_TRIM_MARGIN_S` keeps, and `status` and the `redis_memory`
check warn. In a Redis Cluster the master nearest its `maxmemory` is the one that counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.cluster import RedisCluster

from iot_core.redis_client import RedisClient

#: The share of `maxmemory` above which Redis counts as under memory pressure.
PRESSURE_SHARE = 0.8


@dataclass(frozen=True, slots=True)
class RedisMemory:
    used_bytes: int
    #: 0 when no `maxmemory` is set (Redis then grows until the machine's memory runs out)
    max_bytes: int

    @property
    def share(self) -> float | None:
        """Used memory as a share of `maxmemory`; None without a limit."""
        return self.used_bytes / self.max_bytes if self.max_bytes else None

    @property
    def under_pressure(self) -> bool:
        share = self.share
        return share is not None and share >= PRESSURE_SHARE

    def describe(self) -> str:
        """`X MB of Y MB maxmemory (Z %)`, or `X MB, no maxmemory set`."""
        used = _megabytes(self.used_bytes)
        share = self.share
        if share is None:
            return f"{used}, no maxmemory set"
        text = f"{used} of {_megabytes(self.max_bytes)} maxmemory ({share * 100:.0f} %)"
        if self.under_pressure:
            text += (
                f": above {PRESSURE_SHARE * 100:.0f} %, compaction trims every archived entry "
                "(IOT_STREAM_TRIM_MARGIN_S gives way); when full, the listener stops acknowledging"
            )
        return text


def _megabytes(n: int) -> str:
    return f"{n / 1_048_576:.1f} MB"


def redis_memory(client: RedisClient) -> RedisMemory:
    """What `INFO memory` says of used memory and the limit (the pipeline's Redis user may run INFO); in a
    cluster, of the master nearest its limit (each master holds its own shards and refuses XADD when full)."""
    if isinstance(client, RedisCluster):
        infos = client.info("memory", target_nodes=RedisCluster.PRIMARIES)
        if "used_memory" in infos:  # one master: redis-py answers its info itself
            infos = {"": infos}
        return max((_memory(info) for info in infos.values()), key=_fullness)
    return _memory(client.info("memory"))


def _memory(info: dict) -> RedisMemory:
    return RedisMemory(int(info["used_memory"]), int(info.get("maxmemory", 0)))


def _fullness(memory: RedisMemory) -> tuple[float, int]:
    return (memory.share or 0.0, memory.used_bytes)


def redis_memory_or_none(client: RedisClient) -> RedisMemory | None:
    """`redis_memory`, or None when the user may not run INFO (an ACL file written before it was allowed:
    `iot-etl redis-acl` writes it again)."""
    try:
        return redis_memory(client)
    except redis.exceptions.NoPermissionError:
        return None
