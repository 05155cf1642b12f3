"""Batches: one row per run's arrival range, opened, landed and finished, and the ranges done so far."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg


@dataclass(frozen=True, slots=True)
class BatchInfo:
    run_id: str
    partition_key: str
    range_start: datetime
    range_end: datetime
    start_id: str
    end_id: str
    streams: Sequence[str]
    decoder_version: str
    #: the backfill whose run writes the batch (None for the sensor's runs and runs from the UI)
    backfill: str | None = None
    #: the one stream shard the batch reads (None: every stream)
    shard: int | None = None


def open_batch(conn: psycopg.Connection, info: BatchInfo) -> int:
    """The batch row of this run (one per run, created by whichever asset runs first), stamped with the
    calling transaction, which writes the batch's rows (see `verdicts`): every writer opens its batch."""
    row = conn.execute(
        """INSERT INTO batches (run_id, partition_key, range_start, range_end, start_id, end_id, streams,
                                decoder_version, backfill, shard, written_xid)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, pg_current_xact_id())
           ON CONFLICT (run_id) DO UPDATE SET decoder_version = excluded.decoder_version,
                                              written_xid = excluded.written_xid
           RETURNING batch_id""",
        (
            info.run_id,
            info.partition_key,
            info.range_start,
            info.range_end,
            info.start_id,
            info.end_id,
            list(info.streams),
            info.decoder_version,
            info.backfill,
            info.shard,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def finish_batch(conn: psycopg.Connection, batch_id: int, **counts: int) -> None:
    allowed = {"raw_count", "measurement_count", "event_count", "rejected_count", "duplicate_count"}
    if not counts.keys() <= allowed:
        raise ValueError(f"unknown batch counters {sorted(counts.keys() - allowed)}")
    sets = ", ".join(f"{name} = %({name})s" for name in counts)
    conn.execute(
        f"UPDATE batches SET {sets}, finished_at = clock_timestamp() WHERE batch_id = %(b)s",
        {**counts, "b": batch_id},
    )


def mark_landed(conn: psycopg.Connection, batch_id: int, read: int, oldest: datetime | None) -> None:
    """The batch's range is archived: `read` stream entries were read from it, the oldest arrived at
    `oldest` (None when there was none)."""
    conn.execute(
        """UPDATE batches SET raw_count = %s, oldest_arrival = %s, landed_at = clock_timestamp()
           WHERE batch_id = %s""",
        (read, oldest, batch_id),
    )


#: Batches that cover shard %(shard)s: its own and those that read every stream.
_OF_SHARD = "AND (shard IS NULL OR shard = %(shard)s)"


def landed_ranges(
    conn: psycopg.Connection,
    start: datetime,
    end: datetime,
    *,
    decoded: bool = False,
    shard: int | None = None,
) -> list[tuple[int, int]]:
    """[start_ms, end_ms) of the archived (with `decoded`: archived and decoded) ranges that overlap
    [start, end), in order; with `shard`, only of batches that read that shard (its own or every stream)."""
    rows = conn.execute(
        f"""SELECT (extract(epoch FROM range_start) * 1000)::bigint,
                   (extract(epoch FROM range_end) * 1000)::bigint
            FROM batches WHERE landed_at IS NOT NULL {"AND finished_at IS NOT NULL" if decoded else ""}
              AND range_end > %(s)s AND range_start < %(e)s {_OF_SHARD if shard is not None else ""}
            ORDER BY range_start""",
        {"s": start, "e": end, "shard": shard},
    ).fetchall()
    return [(int(a), int(b)) for a, b in rows]


def landed_ranges_by_shard(
    conn: psycopg.Connection, start: datetime, end: datetime, shards: int, *, decoded: bool = False
) -> dict[int, list[tuple[int, int]]]:
    """`landed_ranges` of each shard 0..shards-1, in one query: a batch of every stream counts for each."""
    rows = conn.execute(
        f"""SELECT shard, (extract(epoch FROM range_start) * 1000)::bigint,
                   (extract(epoch FROM range_end) * 1000)::bigint
            FROM batches WHERE landed_at IS NOT NULL {"AND finished_at IS NOT NULL" if decoded else ""}
              AND range_end > %s AND range_start < %s
            ORDER BY range_start""",
        (start, end),
    ).fetchall()
    ranges: dict[int, list[tuple[int, int]]] = {n: [] for n in range(shards)}
    for shard, a, b in rows:
        for n in range(shards) if shard is None else [shard] if shard in ranges else []:
            ranges[n].append((int(a), int(b)))
    return ranges


def last_processed_end(conn: psycopg.Connection, shard: int | None = None) -> int | None:
    """The end (ms) of the latest range that was both archived and decoded, if any; with `shard`, of
    the batches that read that shard."""
    of_shard = _OF_SHARD if shard is not None else ""
    row = conn.execute(
        f"""SELECT (extract(epoch FROM max(range_end)) * 1000)::bigint FROM batches
           WHERE landed_at IS NOT NULL AND finished_at IS NOT NULL {of_shard}""",
        {"shard": shard},
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None
