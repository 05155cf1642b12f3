"""The sizing arithmetic of `bench.capacity`: from measured per-core figures to a deployment for a rate.

Pure functions, no measurement: every figure is an input, so the formulas can be checked on their own.

    listeners    = ceil(rate / (listener msg/s per core × headroom))
    run workers  = ceil(rate / (run-worker msg/s per core of the format mix × headroom))
    shards       = max(listeners, run workers)   (a run worker per shard, each shard fed by its listeners)
    Redis bytes  = rate × retention margin (s) × bytes per stream entry
    Redis nodes  = max(ceil(Redis bytes / (node memory × 0.8)), ceil(rate / (XADD/s per node × headroom)))
    DB rows/s    = rate × rows per message
    DB cores, at least = ceil(DB rows/s / (COPY floor rows/s per core × headroom))
    DB cores, at most  = ceil(rate / (msg/s of a run's database stages × headroom))

The COPY floor is a bare COPY into an unindexed table: the database cannot take rows faster, so it gives
the fewest cores. A run's database stages (landing, reading the window back, storing) are timed on the
run worker's clock, so they hold the client's share too: they give the most cores.

`headroom` is the share of a core's measured rate a deployment plans to use (0.5: every part runs at half
its measured rate, which leaves room for bursts, catch-up after an outage and the machine's other work).
Redis nodes fill to 80 % of their memory at most: above that the pipeline trims every archived entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REDIS_FILL = 0.8


@dataclass(frozen=True)
class Capacity:
    """Per-core figures measured on one machine."""

    listener_per_core: float  # listener msg/s per CPU second
    worker_per_core: dict[str, float]  # run-worker msg/s by format mix ("plain", "event", "f2", "mix")
    copy_rows_per_s: float  # the COPY floor: raw rows/s one COPY stream puts into PostgreSQL
    rows_per_message: float  # rows the database takes per message of the mix (raw + measurements + ...)
    db_msg_per_core: float  # msg/s of the mix through a run's database stages (land + load + store)
    entry_bytes: float  # Redis memory per stream entry of the mix
    redis_xadd_per_s: float  # stream entries/s one client wrote into one Redis


@dataclass(frozen=True)
class Sizing:
    rate: float
    listeners: int
    run_workers: int
    shards: int
    redis_gb: float
    redis_nodes: int
    db_rows_per_s: float
    db_cores: int
    db_cores_stages: int


def per_core(units: float, seconds: float) -> float:
    """Units per second of one core: `units` processed in `seconds` of CPU (or of one busy core)."""
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    return units / seconds


def needed(rate: float, per_unit: float, headroom: float) -> int:
    """How many units, each carrying `per_unit` × `headroom`, carry `rate` (at least one)."""
    if per_unit <= 0 or not 0 < headroom <= 1:
        raise ValueError("per_unit must be positive and headroom in (0, 1]")
    return max(1, math.ceil(rate / (per_unit * headroom)))


def size(
    rate: float,
    cap: Capacity,
    *,
    mix: str = "mix",
    headroom: float = 0.5,
    margin_s: float = 3720.0,
    node_gb: float = 16.0,
) -> Sizing:
    """The deployment for `rate` msg/s of the format mix `mix` (see the module's formulas)."""
    listeners = needed(rate, cap.listener_per_core, headroom)
    workers = needed(rate, cap.worker_per_core[mix], headroom)
    redis_bytes = rate * margin_s * cap.entry_bytes
    by_memory = needed(redis_bytes, node_gb * 1e9 * REDIS_FILL, 1.0)
    by_writes = needed(rate, cap.redis_xadd_per_s, headroom)
    db_rows = rate * cap.rows_per_message
    return Sizing(
        rate=rate,
        listeners=listeners,
        run_workers=workers,
        shards=max(listeners, workers),
        redis_gb=redis_bytes / 1e9,
        redis_nodes=max(by_memory, by_writes),
        db_rows_per_s=db_rows,
        db_cores=needed(db_rows, cap.copy_rows_per_s, headroom),
        db_cores_stages=needed(rate, cap.db_msg_per_core, headroom),
    )
