"""The `compaction` asset: trims archived stream entries, applies retention and prunes old runs, and says
what it did."""

import time
from datetime import UTC, datetime

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from dagster_project.defs.maintenance.runs import prune_before, prune_runs
from dagster_project.defs.metadata import OWNERS
from dagster_project.defs.resources import (
    BatchPolicyResource,
    CompactionPolicyResource,
    DatabaseResource,
    RedisStreamsResource,
)
from dagster_project.lib.compaction import apply_retention, trim_horizon_ms, trim_stream
from dagster_project.lib.storage.compactions import CompactionRecord, record_compaction
from iot_core.redis_memory import RedisMemory, redis_memory_or_none
from iot_core.streams import utc_from_ms


@asset(
    group_name="maintenance",
    owners=OWNERS,
    kinds={"python", "redis", "postgres"},
    description="Compaction: stream entries below the oldest one not safely archived are trimmed, rows "
    "past their retention are removed, micro-batch runs past the run retention are deleted (each hour "
    "keeps one summary materialization). Its metadata says what it did and freed.",
)
def compaction(
    context: AssetExecutionContext,
    redis: RedisStreamsResource,
    database: DatabaseResource,
    owner_database: DatabaseResource,
    policy: BatchPolicyResource,
    compaction_policy: CompactionPolicyResource,
) -> MaterializeResult:
    started = datetime.now(UTC)
    deadline = time.monotonic() + compaction_policy.budget_s
    client = redis.client()
    now_ms = redis.now_ms()
    memory_before = redis_memory_or_none(client)
    horizon_ms = trim_horizon_ms(
        now_ms, compaction_policy.stream_trim_margin_s * 1000, policy.window_grace_ms, memory_before
    )
    streams = redis.streams()
    with database.connect() as conn:
        # with several shards, each only below what batches of its own (or of every stream) archived
        trimmed = [
            t
            for n, s in enumerate(streams)
            if (t := trim_stream(client, conn, s, horizon_ms, n if len(streams) > 1 else None))
        ]
    memory_after = redis_memory_or_none(client)
    # retention as the schema owner: TimescaleDB's policies and drop_chunks need ownership
    with owner_database.connect(autocommit=True) as conn:
        retained = apply_retention(
            conn,
            compaction_policy.rules(),
            utc_from_ms(now_ms),
            compaction_policy.delete_batch_rows,
            deadline,
            compaction_policy.chunk_interval,
            compaction_policy.compression(),
        )
        pruned = prune_runs(
            context.instance,
            conn,
            prune_before(utc_from_ms(now_ms), compaction_policy.run_retention_days),
            deadline,
        )
        record = CompactionRecord(
            run_id=context.run.run_id,
            started_at=started,
            stream_entries_trimmed=sum(t.entries for t in trimmed),
            stream_bytes_freed=sum(t.bytes_freed for t in trimmed),
            rows_deleted=sum(r.rows for r in retained.removed),
            chunks_dropped=sum(r.chunks for r in retained.removed),
            runs_deleted=pruned.runs_deleted,
            hours_summarised=len(pruned.hours_summarised),
            details={
                "streams": {t.stream: {"entries": t.entries, "kept_from": t.kept_from_ms} for t in trimmed},
                "tables": {
                    r.table: {"rows": r.rows, "chunks": r.chunks, "done": r.done} for r in retained.removed
                },
                "policies_changed": retained.policies_changed,
                "recompressed": {
                    r.table: {"chunks": r.chunks, "done": r.done} for r in retained.recompressed
                },
            },
        )
        record_compaction(conn, record)
    return MaterializeResult(
        metadata={
            "stream_entries_trimmed": record.stream_entries_trimmed,
            "stream_bytes_freed": MetadataValue.int(record.stream_bytes_freed),
            # under pressure the trim margin gave way: every archived entry was trimmed
            "redis_under_memory_pressure": bool(memory_before and memory_before.under_pressure),
            "redis_memory_before": _memory_text(memory_before),
            "redis_memory_after": _memory_text(memory_after),
            "streams_kept_from": MetadataValue.md(
                "\n".join(f"- {t.stream}: {utc_from_ms(t.kept_from_ms).isoformat()}" for t in trimmed)
                or "no entries"
            ),
            "rows_deleted": record.rows_deleted,
            "chunks_dropped": record.chunks_dropped,
            "rows_deleted_by_table": MetadataValue.md(
                "\n".join(
                    f"- {r.table}: {r.rows} rows, {r.chunks} chunks"
                    + ("" if r.done else " (budget spent, more left)")
                    for r in retained.removed
                )
                or "no retention configured"
            ),
            "policies_changed": MetadataValue.md(
                "\n".join(f"- {c}" for c in retained.policies_changed) or "none"
            ),
            "chunks_recompressed": MetadataValue.md(
                "\n".join(
                    f"- {r.table}: {len(r.chunks)} chunk(s) written to since compressed"
                    + ("" if r.done else " (budget spent, more left)")
                    for r in retained.recompressed
                )
                or "none"
            ),
            "runs_deleted": pruned.runs_deleted,
            "hours_summarised": len(pruned.hours_summarised),
            "finished_within_budget": all(r.done for r in retained.removed)
            and all(r.done for r in retained.recompressed)
            and pruned.done,
        }
    )


def _memory_text(memory: RedisMemory | None) -> str:
    return memory.describe() if memory else "unknown (the Redis user may not run INFO)"
