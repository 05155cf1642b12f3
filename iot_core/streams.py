"""Raw stream naming and stream-ID arithmetic (pure; shared by the listener, Dagster and benchmarks).

A Redis stream entry ID is `<ms>-<seq>`, assigned from Redis's clock, so an arrival-time range
`[start_ms, end_ms)` is exactly the ID range `start_ms-0 .. (end_ms-1)-MAX_SEQ`.
"""

from __future__ import annotations

import zlib
from binascii import crc_hqx
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from iot_core.formats.topics import topic_device

MAX_SEQ = 18446744073709551615  # 2**64 - 1, the largest sequence part Redis allows
#: Redis Cluster's hash slots; a key's slot is CRC16 (XMODEM, `crc_hqx`) of its hash tag modulo this.
SLOTS = 16384


def stream_names(prefix: str, shards: int, *, cluster: bool = False) -> list[str]:
    """All raw streams: the prefix itself for one shard, `<prefix>:<n>` for several, and in a Redis
    Cluster `<prefix>:{<tag>}` (`shard_tag`), so that a cluster spreads the shards over its masters."""
    if shards == 1:
        return [prefix]
    if cluster:
        return [f"{prefix}:{{{shard_tag(n, shards)}}}" for n in range(shards)]
    return [f"{prefix}:{n}" for n in range(shards)]


@lru_cache(maxsize=16)
def _tags(shards: int) -> tuple[str, ...]:
    tags = []
    for n in range(shards):
        width = SLOTS / shards
        low, high = n * width + width / 4, (n + 1) * width - width / 4
        k = 0
        while not low <= crc_hqx(f"{n}.{k}".encode(), 0) % SLOTS < high:
            k += 1
        tags.append(f"{n}.{k}")
    return tuple(tags)


def shard_tag(n: int, shards: int) -> str:
    """Shard `n`'s hash tag in a Redis Cluster: `<n>.<k>` with the smallest `k` whose hash slot lies in the
    middle half of the n-th of `shards` equal parts of the 16,384 slots. A cluster made with `redis-cli
    --cluster create` gives each master an equal, contiguous part, so N shards on N masters land one on
    each, and more shards spread evenly (the plain `{<n>}` would put shards 1 and 2 on one master of
    three). The tags depend on the number of shards, which changes only with the streams drained."""
    return _tags(shards)[n]


def stream_for_topic(topic: str, prefix: str, shards: int, *, cluster: bool = False) -> str:
    """The shard a topic's messages go to: a stable hash of its device segment (crc32, not hash())."""
    if shards == 1:
        return prefix
    n = zlib.crc32((topic_device(topic) or topic).encode()) % shards
    return f"{prefix}:{{{shard_tag(n, shards)}}}" if cluster else f"{prefix}:{n}"


@dataclass(frozen=True, slots=True)
class EntryId:
    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str | bytes) -> EntryId:
        if isinstance(text, bytes):
            text = text.decode()
        ms, _, seq = text.partition("-")
        return cls(int(ms), int(seq or 0))

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


def utc_from_ms(ms: int) -> datetime:
    """The UTC instant of a millisecond timestamp (an entry ID's time part, a window bound)."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def id_range(start_ms: int, end_ms: int) -> tuple[str, str]:
    """The inclusive XRANGE bounds of the arrival window [start_ms, end_ms)."""
    if end_ms <= start_ms:
        raise ValueError(f"empty window: end {end_ms} <= start {start_ms}")
    return f"{start_ms}-0", f"{end_ms - 1}-{MAX_SEQ}"
