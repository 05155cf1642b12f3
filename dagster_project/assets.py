"""The partitioned assets: `raw_messages` archives a closed arrival range, `telemetry` makes meaning of it.

Both are thin shells over `dagster_project.batch`; the range comes from the run config (micro-batch runs
the sensor requests) or is the partitions' hours so far as they have closed (backfills, UI runs). The
partitioned assets are built on the partitions definition by `build_ingest_assets`; `compaction` is not
partitioned.
"""

import time
from datetime import UTC, datetime

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    AssetsDefinition,
    BackfillPolicy,
    Backoff,
    Config,
    Failure,
    Jitter,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    RetryPolicy,
    asset,
)

from dagster_project.batch import (
    decode_window,
    land_window,
    mark_feedback_sent,
    owed_feedback,
    window_batch,
)
from dagster_project.compaction import (
    apply_retention,
    counted_so_far,
    hour_summary_metadata,
    prune_before,
    prune_runs,
    reasons_metadata,
    trim_horizon_ms,
    trim_stream,
)
from dagster_project.feedback import FeedbackTopics
from dagster_project.raw_entries import raw_row
from dagster_project.resources import (
    BatchPolicyResource,
    CompactionPolicyResource,
    DatabaseResource,
    MqttPublisherResource,
    RedisStreamsResource,
)
from dagster_project.retention import CompactionRecord, continuous_aggregates, record_compaction
from dagster_project.rollups import refresh_rollups
from dagster_project.storage import BatchInfo
from dagster_project.transient import only_transient_faults_retried
from dagster_project.windows import Window, hours_window
from iot_core.formats.batch import DECODER_VERSION
from iot_core.redis_memory import RedisMemory, redis_memory_or_none
from iot_core.streams import id_range, utc_from_ms

BACKFILL_HOURS_PER_RUN = 6
#: Who answers for the assets (shown on every asset's page and filterable in the catalog); Dagster takes
#: an e-mail address or `team:<name>`.
OWNERS = ["team:telemetry"]
#: A run tagged with this set to "true" sends all of its window's feedback again, even what was sent.
RESEND_FEEDBACK_TAG = "iot/resend_feedback"
#: Passing faults (database or Redis restarting, a network blip) are retried inside the run, spread over
#: about five minutes; a window still failing after that is run again by the sensor later. Other errors
#: are not retried within the run (see `dagster_project.transient`).
TRANSIENT_RETRIES = RetryPolicy(
    max_retries=4, delay=20, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)


class WindowConfig(Config):
    """The exact arrival range a run processes; 0/0 means the partitions' whole hours (backfills)."""

    start_ms: int = 0
    end_ms: int = 0


def run_window(
    context: AssetExecutionContext,
    config: WindowConfig,
    policy: BatchPolicyResource,
    redis: RedisStreamsResource,
) -> Window:
    """The configured range, checked to lie in the run's partitions; else the partitions' hours as far as
    they have closed (an open hour is processed only up to its last closed moment)."""
    keys = context.partition_key_range
    hours = hours_window(keys.start, keys.end)
    if not config.start_ms and not config.end_ms:
        return hours.until(policy.closed_until_ms(redis, redis.client()))
    if not (hours.start_ms <= config.start_ms < config.end_ms <= hours.end_ms):
        raise Failure(
            f"configured range {config.start_ms}..{config.end_ms} is not inside partition(s) "
            f"{keys.start}..{keys.end}",
            allow_retries=False,
        )
    return Window(config.start_ms, config.end_ms)


def batch_info(context: AssetExecutionContext, window: Window, streams: list[str]) -> BatchInfo:
    keys = context.partition_key_range
    partition_key = keys.start if keys.start == keys.end else f"{keys.start}..{keys.end}"
    return window_batch(context.run.run_id, partition_key, window, streams)


def raw_messages(
    context: AssetExecutionContext,
    config: WindowConfig,
    redis: RedisStreamsResource,
    database: DatabaseResource,
    policy: BatchPolicyResource,
) -> MaterializeResult:
    with only_transient_faults_retried():
        window = run_window(context, config, policy, redis)
        client = redis.client()
        closing = policy.closing(redis, client, window)
        streams = redis.streams()
        pages = (
            [raw_row(stream, entry_id, fields) for entry_id, fields in page]
            for piece in closing.pieces()
            for stream in streams
            for page in redis.read_range(client, stream, piece.start_ms, piece.end_ms)
        )
        with database.connect() as conn:
            landed = land_window(conn, batch_info(context, window, streams), pages)
        start_id, end_id = id_range(window.start_ms, window.end_ms)
        return MaterializeResult(
            metadata={
                "range": window.label,
                "start_id": start_id,
                "end_id": end_id,
                "entries_read": landed.read,
                "rows_new": landed.new,
                "waited_for_close_ms": closing.waited_ms,
                "batch_id": MetadataValue.text(str(landed.batch_id)),
            },
        )


def telemetry(
    context: AssetExecutionContext,
    config: WindowConfig,
    redis: RedisStreamsResource,
    database: DatabaseResource,
    policy: BatchPolicyResource,
    mqtt: MqttPublisherResource,
) -> MaterializeResult:
    with only_transient_faults_retried():
        window = run_window(context, config, policy, redis)
        # devices are answered for the runs the sensor requests; re-processing whole hours answers nobody
        topics = FeedbackTopics(mqtt.ack_topic_template, mqtt.deadletter_topic) if config.end_ms else None
        resend = context.run.tags.get(RESEND_FEEDBACK_TAG, "").lower() == "true"
        with database.connect() as conn, database.connect(autocommit=True) as reader:
            decoded = decode_window(
                conn,
                batch_info(context, window, []),
                window,
                policy.decode_options(),
                topics,
                policy.decode_page_rows,
                reader,
            )
            owed = owed_feedback(conn, decoded.feedback, resend=resend)
        acks = 0
        if owed:
            try:
                acks = mqtt.publish_all([(f.topic, f.body) for f in owed])
            except OSError as exc:  # ConnectionError included
                context.log.warning(f"could not publish {len(owed)} ACKs/dead letters: {exc}")
            if acks == len(owed):  # otherwise all are owed still: a re-run sends them (at least once)
                with database.connect() as conn:
                    mark_feedback_sent(conn, owed, context.run.run_id)
        reasons = decoded.reasons()
        counts = {
            "raw_messages": decoded.raw,
            "measurements": decoded.measurements,
            "events": decoded.events,
            "rejected": decoded.rejected_count,
            "duplicates": decoded.duplicates,
            **reasons_metadata(reasons),
        }
        keys = context.partition_keys
        so_far = None
        if config.end_ms and len(keys) == 1:
            # the hour's counts up to this range, of which this run reads only its own range: the run that
            # closes the hour then does not count the whole hour
            with database.connect() as conn:
                so_far = counted_so_far(conn, keys[0], window.utc_bounds[1])
        if len(keys) > 1 or window.closes_hour:
            # a partition's plotted values are its hour's totals once the hour has closed; a run over several
            # hours reports each hour on its own rather than the range's totals on every hour
            with database.connect() as conn:
                counted = so_far[0] if so_far else None
                summaries = {key: hour_summary_metadata(conn, key, counted) for key in keys}
            if len(keys) > 1:
                for key in keys:
                    context.log_event(
                        AssetMaterialization(
                            asset_key=context.asset_key, partition=key, metadata=summaries[key]
                        )
                    )
                counts = {f"run_{name}": value for name, value in counts.items()}
            else:
                counts = {
                    "run_range": window.label,
                    **{f"run_{name}": value for name, value in counts.items()},
                    **summaries[keys[0]],
                }
        return MaterializeResult(
            metadata={
                "range": window.label,  # a closed hour's own range replaces it below
                **counts,
                # where this run began to count the hour: what came before was counted by earlier runs
                **({"hour_counts_read_from": so_far[1].isoformat()} if so_far else {}),
                "feedback_published": f"{acks}/{len(owed)}",
                "feedback_already_sent": len(decoded.feedback) - len(owed),
                **{f"seconds_{stage}": round(s, 4) for stage, s in decoded.seconds.items()},
                "batch_id": MetadataValue.text(str(decoded.batch_id)),
                "decoder_version": DECODER_VERSION,
            },
        )


def hourly_rollups(
    context: AssetExecutionContext,
    config: WindowConfig,
    redis: RedisStreamsResource,
    database: DatabaseResource,
    owner_database: DatabaseResource,
    policy: BatchPolicyResource,
) -> MaterializeResult:
    window = run_window(context, config, policy, redis)
    with database.connect(autocommit=True) as conn:
        aggregate = "hourly_rollups" in continuous_aggregates(conn)
    # TimescaleDB lets only a continuous aggregate's owner refresh it; the table is the writer's to upsert
    with (owner_database if aggregate else database).connect(autocommit=True) as conn:
        written = refresh_rollups(conn, *window.utc_bounds)
    return MaterializeResult(metadata={"range": window.label, "rollup_rows_written": written})


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
    now_ms = redis.now_ms(client)
    memory_before = redis_memory_or_none(client)
    horizon_ms = trim_horizon_ms(
        now_ms, compaction_policy.stream_trim_margin_s * 1000, policy.window_grace_ms, memory_before
    )
    with database.connect() as conn:
        trimmed = [t for s in redis.streams() if (t := trim_stream(client, conn, s, horizon_ms))]
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
            compaction_policy.compress_after,
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
            "runs_deleted": pruned.runs_deleted,
            "hours_summarised": len(pruned.hours_summarised),
            "finished_within_budget": all(r.done for r in retained.removed) and pruned.done,
        }
    )


def _memory_text(memory: RedisMemory | None) -> str:
    return memory.describe() if memory else "unknown (the Redis user may not run INFO)"


def build_ingest_assets(partitions: PartitionsDefinition) -> list[AssetsDefinition]:
    """`raw_messages`, `telemetry` and `hourly_rollups`, partitioned by `partitions`."""
    return [
        asset(
            partitions_def=partitions,
            backfill_policy=BackfillPolicy.multi_run(BACKFILL_HOURS_PER_RUN),
            group_name="ingest",
            retry_policy=TRANSIENT_RETRIES,
            owners=OWNERS,
            kinds={"python", "redis", "postgres"},
            description="Every stream entry of the arrival range, untouched, in `raw_messages` "
            "(the archive).",
        )(raw_messages),
        asset(
            partitions_def=partitions,
            backfill_policy=BackfillPolicy.multi_run(BACKFILL_HOURS_PER_RUN),
            deps=["raw_messages"],
            group_name="ingest",
            retry_policy=TRANSIENT_RETRIES,
            owners=OWNERS,
            kinds={"python", "polars", "pandera", "postgres"},
            code_version=DECODER_VERSION,
            description="Decoded, validated measurements and events (facts carry raw_id and batch_id "
            "lineage); everything else in `rejected` with its reason.",
        )(telemetry),
        asset(
            partitions_def=partitions,
            backfill_policy=BackfillPolicy.multi_run(BACKFILL_HOURS_PER_RUN),
            deps=["telemetry"],
            group_name="ingest",
            owners=OWNERS,
            kinds={"python", "postgres"},
            description="`hourly_rollups`: count, min, max, avg and last numeric value per device, metric "
            "and hour of reading time (a table on PostgreSQL, a continuous aggregate on TimescaleDB). Each "
            "run recomputes the hours that the readings arriving in its range fall in, so late readings "
            "reopen and correct their hour.",
        )(hourly_rollups),
    ]
