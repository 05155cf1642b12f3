"""What compaction does to the streams and the tables (no Dagster): trim archived stream entries, apply
retention, compress again what writes into compressed history left partial.

Stream entries go only below the oldest entry that is not safely archived: the first range of arrival
time, from the stream's first entry on, that holds entries of this shard and is not covered by a batch
whose range was landed in `raw_messages` (`batches.landed_at`). Nothing younger than the safety margin
goes either, archived or not, so a re-run of a recent window can still read the stream, unless Redis is
under memory pressure (`trim_horizon_ms`): then the margin gives way and every archived entry goes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg

from dagster_project.lib.chunks import Recompressed, recompress_partial
from dagster_project.lib.retention import (
    Removed,
    RetentionRule,
    apply_retention_policy,
    apply_timescale_policies,
    continuous_aggregates,
    delete_older,
    drop_old_chunks,
    hypertables,
)
from dagster_project.lib.storage.batches import landed_ranges
from dagster_project.lib.windows import Window, uncovered
from iot_core.redis_client import RedisClient
from iot_core.redis_memory import RedisMemory
from iot_core.streams import EntryId, utc_from_ms


def trim_horizon_ms(now_ms: int, margin_ms: int, grace_ms: int, memory: RedisMemory | None) -> int:
    """The arrival time (ms) below which archived entries may be trimmed. Normally the margin keeps recent
    archived entries for re-runs; under memory pressure (`RedisMemory.under_pressure`; `memory` None when
    unknown) it gives way, because a full Redis (`noeviction`) stops the listener acknowledging, and only
    the grace is kept (a window still closing). Unarchived entries are never trimmed either way:
    `trim_stream` stops at the first."""
    pressed = memory is not None and memory.under_pressure
    return now_ms - max(0 if pressed else margin_ms, grace_ms)


def keep_from_ms(
    ranges: list[tuple[int, int]], first_ms: int, horizon_ms: int, has_entries: Callable[[Window], bool]
) -> int:
    """The arrival time (ms) from which a stream's entries must be kept: the start of the first range in
    [first_ms, horizon_ms) that no archived range covers and that holds entries, else the horizon."""
    for gap in uncovered(ranges, first_ms, horizon_ms):
        if has_entries(gap):
            return gap.start_ms
    return max(first_ms, horizon_ms)


@dataclass(frozen=True, slots=True)
class Trimmed:
    stream: str
    kept_from_ms: int
    entries: int
    bytes_freed: int


def unarchived_from_ms(
    client: RedisClient,
    conn: psycopg.Connection,
    stream: str,
    first_ms: int,
    until_ms: int,
    shard: int | None = None,
) -> int:
    """Where the stream's not safely archived entries begin, looking at [first_ms, until_ms); `until_ms`
    (or `first_ms`, if later) when every entry before it is archived. The stream of `shard` (of several,
    each processed by runs of its own) is archived where a batch of that shard or of every stream is."""
    ranges = landed_ranges(conn, utc_from_ms(first_ms), utc_from_ms(until_ms), shard=shard)

    def has_entries(gap: Window) -> bool:
        low, high = gap.id_range
        return bool(client.xrange(stream, low, high, count=1))

    return keep_from_ms(ranges, first_ms, until_ms, has_entries)


def trim_stream(
    client: RedisClient,
    conn: psycopg.Connection,
    stream: str,
    horizon_ms: int,
    shard: int | None = None,
) -> Trimmed | None:
    """XTRIM one shard below its oldest entry that is not safely archived (by a batch of `shard`, if given,
    or of every stream); None for an empty stream."""
    first = client.xrange(stream, "-", "+", count=1)
    if not first:
        return None
    first_ms = EntryId.parse(first[0][0]).ms
    if first_ms >= horizon_ms:
        return Trimmed(stream, first_ms, 0, 0)
    keep_ms = unarchived_from_ms(client, conn, stream, first_ms, horizon_ms, shard)
    before = int(client.memory_usage(stream) or 0)
    entries = int(client.xtrim(stream, minid=f"{keep_ms}-0", approximate=False))
    after = int(client.memory_usage(stream) or 0)
    return Trimmed(stream, keep_ms, entries, max(0, before - after))


@dataclass(slots=True)
class RetentionOutcome:
    removed: list[Removed] = field(default_factory=list)
    policies_changed: list[str] = field(default_factory=list)
    recompressed: list[Recompressed] = field(default_factory=list)


def apply_retention(
    conn: psycopg.Connection,
    rules: list[RetentionRule],
    now: datetime,
    batch_rows: int,
    deadline: float,
    chunk_interval: str,
    compression: Mapping[str, str],
) -> RetentionOutcome:
    """Hypertables: policies from the settings (`compression`: compress after, by hypertable), then their
    old chunks dropped now, and chunks left partial by writes into compressed history compressed again
    (until `deadline`); continuous aggregates: the same for the retention policy; plain tables: old rows
    deleted in bounded batches. `conn` is in autocommit mode."""
    outcome = RetentionOutcome()
    hyper = hypertables(conn)
    aggregates = continuous_aggregates(conn)
    for rule in rules:
        if rule.table in hyper:
            outcome.policies_changed += apply_timescale_policies(
                conn, rule.table, chunk_interval, compression.get(rule.table), rule.days
            )
        elif rule.table in aggregates:
            outcome.policies_changed += apply_retention_policy(conn, rule.table, rule.days)
        if not rule.days:
            continue
        cutoff = now - timedelta(days=rule.days)
        if rule.table in hyper or rule.table in aggregates:
            outcome.removed.append(drop_old_chunks(conn, rule.table, cutoff))
        else:
            outcome.removed.append(delete_older(conn, rule, cutoff, batch_rows, deadline))
    outcome.recompressed = recompress_partial(conn, sorted(hyper), deadline)
    return outcome
