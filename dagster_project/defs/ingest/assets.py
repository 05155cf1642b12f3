"""The partitioned assets: `raw_messages` archives a closed arrival range, `telemetry` makes meaning of it,
`hourly_rollups` brings the rollups of what it touched up to date.

They are thin shells over `dagster_project.lib`; the range is the run's window (`RunWindow`: micro-batch
runs the sensor requests carry theirs, backfills and UI runs take the partitions' hours so far as they have
closed). They are built on the partitions definition by `build_ingest_assets`.
"""

import contextlib
import time
from typing import TYPE_CHECKING

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    AssetsDefinition,
    BackfillPolicy,
    Backoff,
    Jitter,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    RetryPolicy,
    asset,
)

from dagster_project.defs.ingest.shards import settled_until_ms
from dagster_project.defs.metadata import OWNERS, hour_summary_metadata, reasons_metadata
from dagster_project.defs.resources import (
    BatchPolicyResource,
    DatabaseResource,
    MqttPublisherResource,
    RedisStreamsResource,
)
from dagster_project.defs.run_window import RunWindowResource
from dagster_project.defs.transient import only_transient_faults_retried
from dagster_project.lib.chunks import recompress_partial
from dagster_project.lib.feedback_sender import FeedbackSender
from dagster_project.lib.hour_summaries import counted_so_far
from dagster_project.lib.raw_entries import raw_row
from dagster_project.lib.retention import continuous_aggregates, hypertables
from dagster_project.lib.rollups import refresh_rollups
from dagster_project.lib.storage.batches import BatchInfo
from dagster_project.lib.windows import BACKFILL_TAG, Window
from iot_core.formats.version import DECODER_VERSION
from iot_core.streams import utc_from_ms

if TYPE_CHECKING:  # polars and pandera: see `build_ingest_assets`
    from dagster_project.lib.batch import OwedFeedback

BACKFILL_HOURS_PER_RUN = 6


#: A run tagged with this set to "true" sends all of its window's feedback again, even what was sent.
RESEND_FEEDBACK_TAG = "iot/resend_feedback"


#: Passing faults (database or Redis restarting, a network blip) are retried inside the run, spread over
#: about five minutes; a window still failing after that is run again by the sensor later. Other errors
#: are not retried within the run (see `dagster_project.transient`).
TRANSIENT_RETRIES = RetryPolicy(
    max_retries=4, delay=20, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)


def run_window(
    context: AssetExecutionContext,
    window: RunWindowResource,
    policy: BatchPolicyResource,
    redis: RedisStreamsResource,
) -> Window:
    """The run's arrival range (see `RunWindowResource.resolve`)."""
    return window.resolve(context.partition_key_range, lambda: policy.closed_until_ms(redis))


def batch_info(
    context: AssetExecutionContext, window: Window, streams: list[str], shard: int | None = None
) -> BatchInfo:
    from dagster_project.lib.batch import window_batch  # polars: see `build_ingest_assets`

    keys = context.partition_key_range
    partition_key = keys.start if keys.start == keys.end else f"{keys.start}..{keys.end}"
    backfill = context.run.tags.get(BACKFILL_TAG)
    return window_batch(context.run.run_id, partition_key, window, streams, backfill, shard)


def raw_messages(
    context: AssetExecutionContext,
    window: RunWindowResource,
    redis: RedisStreamsResource,
    database: DatabaseResource,
    policy: BatchPolicyResource,
) -> MaterializeResult:
    from dagster_project.lib.batch import land_window  # polars: see `build_ingest_assets`

    with only_transient_faults_retried():
        arrival = run_window(context, window, policy, redis)
        closing = policy.closing(redis, arrival)
        streams = window.streams_of(redis.streams())  # a shard's run reads its shard's stream
        pages = (
            [raw_row(stream, entry_id, fields) for entry_id, fields in page]
            for piece in closing.pieces()
            for stream in streams
            for page in redis.read_range(stream, piece)
        )
        with database.connect() as conn:
            landed = land_window(conn, batch_info(context, arrival, streams, window.shard), pages)
        start_id, end_id = arrival.id_range
        return MaterializeResult(
            metadata={
                "range": arrival.label,
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
    window: RunWindowResource,
    redis: RedisStreamsResource,
    database: DatabaseResource,
    policy: BatchPolicyResource,
    mqtt: MqttPublisherResource,
) -> MaterializeResult:
    # polars and pandera: see `build_ingest_assets`
    from dagster_project.lib.batch import OwedFeedback, decode_window
    from dagster_project.lib.feedback import FeedbackTopics

    with only_transient_faults_retried():
        micro = window.configured is not None
        arrival = run_window(context, window, policy, redis)
        # devices are answered for the runs the sensor requests; re-processing whole hours answers nobody
        topics = FeedbackTopics(mqtt.ack_topic_template, mqtt.deadletter_topic) if micro else None
        resend = context.run.tags.get(RESEND_FEEDBACK_TAG, "").lower() == "true"
        # a shard's run decodes its shard's messages of the range; the other shards' runs decode theirs
        stream = window.streams_of(redis.streams())[0] if window.shard is not None else None
        with (
            database.connect() as conn,
            database.connect(autocommit=True) as reader,
            mqtt.feedback_sender() as sender,
        ):
            owed = OwedFeedback(conn, sender, resend=resend)
            try:
                decoded = decode_window(
                    conn,
                    batch_info(context, arrival, [], window.shard),
                    arrival,
                    policy.decode_options(),
                    topics,
                    policy.decode_page_rows,
                    reader,
                    policy.redelivery_horizon,
                    stream,
                    feedback_sink=owed.send,
                )
            except BaseException:
                # the pages committed before the failure were answered: what the broker took is recorded,
                # so that the window's next run does not answer those elements twice
                with contextlib.suppress(Exception):  # the run's own error is the one to report
                    _settle_feedback(context, database, sender, owed)
                raise
            acks, seconds = _settle_feedback(context, database, sender, owed)
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
        if micro and len(keys) == 1:
            # the hour's counts up to this range, of which this run reads only its own range: the run that
            # closes the hour then does not count the whole hour. A shard's run counts as far as every
            # shard is processed (the last shard to close the hour counts it whole)
            end_ms = arrival.end_ms
            if window.shard is not None:
                with database.connect() as conn:
                    end_ms = settled_until_ms(conn, redis, arrival.hour_start_ms, end_ms)
            clock = time.perf_counter()
            with database.connect() as conn:
                so_far = counted_so_far(conn, keys[0], utc_from_ms(end_ms))
            seconds["hour_counts"] = time.perf_counter() - clock
        if len(keys) > 1 or arrival.closes_hour:
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
                    "run_range": arrival.label,
                    **{f"run_{name}": value for name, value in counts.items()},
                    **summaries[keys[0]],
                }
        return MaterializeResult(
            metadata={
                "range": arrival.label,  # a closed hour's own range replaces it below
                **counts,
                # where this run began to count the hour: what came before was counted by earlier runs
                **({"hour_counts_read_from": so_far[1].at.isoformat()} if so_far else {}),
                "feedback_published": f"{acks}/{owed.count}",
                "feedback_already_sent": decoded.feedback.height - owed.count,
                **{f"seconds_{stage}": round(s, 4) for stage, s in (decoded.seconds | seconds).items()},
                "batch_id": MetadataValue.text(str(decoded.batch_id)),
                "decoder_version": DECODER_VERSION,
            },
        )


def _settle_feedback(
    context: AssetExecutionContext, database: DatabaseResource, sender: FeedbackSender, owed: "OwedFeedback"
) -> tuple[int, dict[str, float]]:
    """Wait for the broker to acknowledge what the run published and record it as sent if it took all
    of it (otherwise all of it is owed still: a re-run sends it, at least once); the acknowledged count
    and the seconds waited and recorded."""
    from dagster_project.lib.batch import mark_feedback_sent

    clock = time.perf_counter()
    acks = sender.finish()  # what is left to publish once the last page is stored
    seconds = {"feedback_publish": time.perf_counter() - clock}
    if isinstance(sender.error, OSError):  # ConnectionError included
        context.log.warning(f"could not publish {sender.handed} ACKs/dead letters: {sender.error}")
    elif sender.error is not None:
        raise sender.error
    if owed.count and acks == owed.count:
        clock = time.perf_counter()
        with database.connect() as conn:
            mark_feedback_sent(conn, owed.frame(), context.run.run_id)
        seconds["feedback_record"] = time.perf_counter() - clock
    return acks, seconds


def hourly_rollups(
    context: AssetExecutionContext,
    window: RunWindowResource,
    redis: RedisStreamsResource,
    database: DatabaseResource,
    owner_database: DatabaseResource,
    policy: BatchPolicyResource,
) -> MaterializeResult:
    arrival = run_window(context, window, policy, redis)
    with database.connect(autocommit=True) as conn:
        aggregate = "hourly_rollups" in continuous_aggregates(conn)
    # TimescaleDB lets only a continuous aggregate's owner refresh it; the table is the writer's to upsert
    with (owner_database if aggregate else database).connect(autocommit=True) as conn:
        written = refresh_rollups(conn, *arrival.utc_bounds)
        # what this run (a late reading, a backfill) wrote into compressed history, compressed again as
        # its owner: until then every run's look-ups by raw id decompress those chunks
        recompressed = recompress_partial(conn, sorted(hypertables(conn))) if aggregate else []
    return MaterializeResult(
        metadata={
            "range": arrival.label,
            "rollup_rows_written": written,
            "chunks_recompressed": sum(len(r.chunks) for r in recompressed),
        }
    )


def build_ingest_assets(partitions: PartitionsDefinition) -> list[AssetsDefinition]:
    """`raw_messages`, `telemetry` and `hourly_rollups`, partitioned by `partitions`.

    The assets import the decoders (polars, pandera) when they run, not here: the code server, which
    loads these definitions to serve the sensor and the UI, then holds neither library (about 60 MB); the
    run workers' forkserver has them imported already."""
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
