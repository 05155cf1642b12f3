"""Stream shards processed by runs of their own: what the sensor, the assets and the checks need to look at
one shard (its stream, its runs) while the others go on.

With one stream (`IOT_STREAM_SHARDS=1`) nothing here changes a run: it reads every stream, as before. With
several, each run carries its shard in its window (`RunWindowResource.shard`) and in the `iot/shard` tag,
on which the run queue limits runs per shard (`IOT_RUNS_PER_SHARD`).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from dagster_project.defs.resources import RedisStreamsResource
from dagster_project.lib.storage.batches import landed_ranges_by_shard
from dagster_project.lib.windows import Window, settled_until
from iot_core.streams import EntryId, utc_from_ms

#: The tag of a run of one shard (its number); runs of every stream have none.
SHARD_TAG = "iot/shard"


def stream_has_entries(redis: RedisStreamsResource, stream: str, window: Window) -> bool:
    """Whether `stream` holds an entry in `window`."""
    return any(page for page in redis.read_range(stream, window, page=1))


def stream_first_entry_ms(redis: RedisStreamsResource, stream: str, now_ms: int) -> int | None:
    """The arrival time of `stream`'s first entry up to `now_ms`, None when it has none."""
    for page in redis.read_range(stream, Window(0, now_ms + 1), page=1):
        return EntryId.parse(page[0][0]).ms
    return None


@dataclass(frozen=True, slots=True)
class Scope:
    """The streams one part of a sensor tick looks after: one shard of several, or (shard None) every
    stream, as with a single stream."""

    shard: int | None
    streams: tuple[str, ...]

    @classmethod
    def all_of(cls, redis: RedisStreamsResource) -> list[Scope]:
        """One scope per shard with several shards, else one of every stream."""
        streams = redis.streams()
        if len(streams) == 1:
            return [cls(None, tuple(streams))]
        return [cls(n, (stream,)) for n, stream in enumerate(streams)]

    def has_entries(self, redis: RedisStreamsResource, window: Window) -> bool:
        if self.shard is None:
            return redis.has_entries(window)
        return stream_has_entries(redis, self.streams[0], window)

    def first_entry_ms(self, redis: RedisStreamsResource, now_ms: int) -> int | None:
        if self.shard is None:
            return redis.first_entry_ms()
        return stream_first_entry_ms(redis, self.streams[0], now_ms)

    def tags(self) -> dict[str, str]:
        return {} if self.shard is None else {SHARD_TAG: str(self.shard)}

    def key(self, run_key: str) -> str:
        """A run key unique among the shards' runs of one window."""
        return run_key if self.shard is None else f"{run_key}-shard{self.shard}"

    def holds(self, run_shard: int | None) -> bool:
        """Whether a run of `run_shard` (None: every stream) reads this scope's streams."""
        return run_shard is None or self.shard is None or run_shard == self.shard


def settled_until_ms(
    conn: psycopg.Connection,
    redis: RedisStreamsResource,
    start_ms: int,
    end_ms: int,
    *,
    decoded: bool = True,
) -> int:
    """How far from `start_ms` up to `end_ms` every shard's entries are archived and (with `decoded`)
    decoded (see `settled_until`): a check of an hour in one shard's run judges only that far, so that it
    does not count another shard's window that is still being processed as missing or unaccounted."""
    streams = redis.streams()
    ranges = landed_ranges_by_shard(
        conn, utc_from_ms(start_ms), utc_from_ms(end_ms), len(streams), decoded=decoded
    )
    return settled_until(ranges, start_ms, end_ms, lambda n, gap: stream_has_entries(redis, streams[n], gap))
