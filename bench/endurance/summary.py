"""What a soak's samples say: is Redis memory flat after the first compaction, is the run count bounded,
what was lost, which runs failed, which storage errors were logged; and the table of samples."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

MB = 1024 * 1024
#: Redis memory counts as flat when its peak over the second half of the samples after the first
#: compaction is at most this much above its peak over the first half.
FLAT_TOLERANCE = 1.25


def redis_memory(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Redis used_memory at the first sample after the first compaction, at the end, and its peaks over
    the two halves of the samples since then."""
    after = [s for s in samples if s["compactions"] >= 1]
    if len(after) < 2:
        return {"first_compaction_mb": None, "end_mb": None, "flat": None}
    half = len(after) // 2
    early = max(s["redis_used_memory"] for s in after[:half])
    late = max(s["redis_used_memory"] for s in after[half:])
    return {
        "first_compaction_mb": round(after[0]["redis_used_memory"] / MB, 1),
        "end_mb": round(after[-1]["redis_used_memory"] / MB, 1),
        "peak_first_half_mb": round(early / MB, 1),
        "peak_second_half_mb": round(late / MB, 1),
        "flat": late <= early * FLAT_TOLERANCE,
    }


def run_count(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs in the instance: the most at any sample, at the end, and whether pruning ever lowered it."""
    counts = [s["runs"] for s in samples]
    return {
        "max": max(counts),
        "end": counts[-1],
        "micro_end": samples[-1]["micro_runs"],
        "runs_deleted": samples[-1]["runs_deleted"],
        "ever_fell": any(b < a for a, b in pairwise(counts)),
    }


def summarize(samples: list[dict[str, Any]], acked: int, archived: int) -> dict[str, Any]:
    """The soak's verdict from its samples, the simulator's acknowledged count and the archive's count
    after the drain. `samples` are `Sample.as_dict()` values in time order."""
    last = samples[-1]
    return {
        "acked": acked,
        "archived": archived,
        "lost": acked - archived,
        "redis_memory": redis_memory(samples),
        "runs": run_count(samples),
        "runs_failed": last["runs_failed_seen"],
        "storage_error_lines": last["storage_error_lines"],
        "storage_errors": last["storage_errors"],
        "database_is_locked": last["storage_errors"].get("database is locked", 0),
        "compactions": last["compactions"],
        "stream_entries_trimmed": last["stream_entries_trimmed"],
        "load_avg_1m": {
            "min": min(s["load_avg_1m"] for s in samples),
            "max": max(s["load_avg_1m"] for s in samples),
        },
    }


COLUMNS = (
    ("min", "{:>5.1f}", lambda s: s["elapsed_s"] / 60),
    ("redis MB", "{:>8.1f}", lambda s: s["redis_used_memory"] / MB),
    ("stream", "{:>8,}", lambda s: sum(s["stream_lengths"].values())),
    ("runs", "{:>6,}", lambda s: s["runs"]),
    ("failed", "{:>6,}", lambda s: s["runs_failed_seen"]),
    ("archived", "{:>9,}", lambda s: s["raw_messages"]),
    ("stored", "{:>9,}", lambda s: s["measurements"] + s["events"]),
    ("rejected", "{:>8,}", lambda s: s["rejected"]),
    ("compact", "{:>7,}", lambda s: s["compactions"]),
    ("listener MB", "{:>11.0f}", lambda s: s["rss_mb"].get("listener", 0.0)),
    ("dagster MB", "{:>10.0f}", lambda s: sum(v for g, v in s["rss_mb"].items() if g in DAGSTER_GROUPS)),
    ("st.err", "{:>6,}", lambda s: s["storage_error_lines"]),
    ("load", "{:>5.1f}", lambda s: s["load_avg_1m"]),
)
DAGSTER_GROUPS = frozenset({"dagster-daemon", "dagster-webserver", "code-server", "run-workers"})


def table(samples: list[dict[str, Any]], every_s: float = 300.0) -> str:
    """One line per `every_s` of samples (and the last one)."""
    chosen, next_at = [], 0.0
    for sample in samples:
        if sample["elapsed_s"] >= next_at:
            chosen.append(sample)
            next_at = sample["elapsed_s"] + every_s - 15  # samples are ~30 s apart, never exactly
    if samples and chosen[-1] is not samples[-1]:
        chosen.append(samples[-1])
    widths = [len(fmt.format(0)) for _, fmt, _ in COLUMNS]
    lines = [" ".join(f"{h:>{w}}" for (h, _, _), w in zip(COLUMNS, widths, strict=True))]
    for sample in chosen:
        lines.append(" ".join(fmt.format(get(sample)) for _, fmt, get in COLUMNS))
    return "\n".join(lines)
