"""Raw stream naming and stream-ID arithmetic (pure; shared by the listener, Dagster and benchmarks).

A Redis stream entry ID is `<ms>-<seq>`, assigned from Redis's clock, so an arrival-time range
`[start_ms, end_ms)` is exactly the ID range `start_ms-0 .. (end_ms-1)-MAX_SEQ`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

from iot_core.formats.topics import topic_device

MAX_SEQ = 18446744073709551615  # 2**64 - 1, the largest sequence part Redis allows


def stream_names(prefix: str, shards: int) -> list[str]:
    """All raw streams: the prefix itself for one shard, `<prefix>:<n>` for several."""
    if shards == 1:
        return [prefix]
    return [f"{prefix}:{n}" for n in range(shards)]


def stream_for_topic(topic: str, prefix: str, shards: int) -> str:
    """The shard a topic's messages go to: a stable hash of its device segment (crc32, not hash())."""
    if shards == 1:
        return prefix
    return f"{prefix}:{zlib.crc32((topic_device(topic) or topic).encode()) % shards}"


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
