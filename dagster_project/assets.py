"""The partitioned assets: `raw_messages` lands a stream-ID range, `telemetry` makes meaning of it."""

import json
from zoneinfo import ZoneInfo

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from dagster_project.partitions import hourly_arrival_partitions
from dagster_project.raw_entries import raw_row
from dagster_project.resources import DatabaseResource, MqttPublisherResource, RedisStreamsResource
from dagster_project.storage import (
    BatchInfo,
    count_raw,
    finish_batch,
    land_raw,
    load_f2_catalog,
    load_raw,
    open_batch,
    reconcile,
    store_events,
    store_measurements,
    store_rejected,
)
from dagster_project.validation import EventSchema, MeasurementSchema, split_valid
from dagster_project.windows import Window
from iot_core.formats.batch import DECODER_VERSION, DecodeOptions, decode_batch
from iot_core.settings import get_settings
from iot_core.streams import id_range, utc_from_ms

BACKFILL_HOURS_PER_RUN = 6


class WindowConfig(Config):
    """The exact arrival range a run processes; 0/0 means the partitions' whole hours (backfills)."""

    start_ms: int = 0
    end_ms: int = 0


def run_window(context: AssetExecutionContext, config: WindowConfig) -> Window:
    hours = context.partition_time_window
    part_start = int(hours.start.timestamp() * 1000)
    part_end = int(hours.end.timestamp() * 1000)
    if not config.start_ms and not config.end_ms:
        return Window(part_start, part_end)
    if not (part_start <= config.start_ms < config.end_ms <= part_end):
        raise ValueError(
            f"configured range {config.start_ms}..{config.end_ms} is not inside partition(s) "
            f"{context.partition_key_range.start}..{context.partition_key_range.end}"
        )
    return Window(config.start_ms, config.end_ms)


def _batch_info(context: AssetExecutionContext, window: Window, streams: list[str]) -> BatchInfo:
    keys = context.partition_key_range
    start_id, end_id = id_range(window.start_ms, window.end_ms)
    return BatchInfo(
        run_id=context.run.run_id,
        partition_key=keys.start if keys.start == keys.end else f"{keys.start}..{keys.end}",
        range_start=utc_from_ms(window.start_ms),
        range_end=utc_from_ms(window.end_ms),
        start_id=start_id,
        end_id=end_id,
        streams=streams,
        decoder_version=DECODER_VERSION,
    )


@asset(
    partitions_def=hourly_arrival_partitions,
    backfill_policy=BackfillPolicy.multi_run(BACKFILL_HOURS_PER_RUN),
    group_name="ingest",
    check_specs=[
        AssetCheckSpec(
            "archive_complete",
            asset="raw_messages",
            description="Every stream entry of the range (the whole hour when it closes) is archived.",
        )
    ],
    description="Every stream entry of the arrival range, untouched, in `raw_messages` (the archive).",
)
def raw_messages(
    context: AssetExecutionContext,
    config: WindowConfig,
    redis: RedisStreamsResource,
    database: DatabaseResource,
) -> MaterializeResult:
    window = run_window(context, config)
    streams = redis.streams()
    client = redis.client()
    if not config.end_ms:  # whole partitions (a backfill): the open hour only as far as it has closed
        closed_until = redis.now_ms(client) - redis.window_grace_ms
        window = Window(window.start_ms, max(window.start_ms + 1, min(window.end_ms, closed_until)))
    waited_ms = redis.wait_closed(client, window.end_ms)
    read = landed = 0
    with database.connect() as conn:
        batch_id = open_batch(conn, _batch_info(context, window, streams))
        for stream in streams:
            for page in redis.read_range(client, stream, window.start_ms, window.end_ms):
                rows = [raw_row(stream, entry_id, fields) for entry_id, fields in page]
                read += len(rows)
                landed += land_raw(conn, rows, batch_id)
        finish_batch(conn, batch_id, raw_count=read)
        # when the hour closes, look at all of it: a failed micro-batch run shows up here
        checked = Window(window.hour_start_ms, window.end_ms) if window.closes_hour else window
        archived = count_raw(conn, utc_from_ms(checked.start_ms), utc_from_ms(checked.end_ms))
    # the run's own range was just read whole (it is closed); only the rest of the hour needs counting
    in_stream = read
    if checked.start_ms < window.start_ms:
        in_stream += sum(redis.count_range(client, s, checked.start_ms, window.start_ms) for s in streams)
    start_id, end_id = id_range(window.start_ms, window.end_ms)
    return MaterializeResult(
        check_results=[
            AssetCheckResult(
                check_name="archive_complete",
                # entries trimmed from the stream after landing make it smaller, never larger
                passed=in_stream <= archived,
                severity=AssetCheckSeverity.ERROR,
                description=None
                if in_stream <= archived
                else f"{in_stream - archived} stream entries are not archived: backfill the hour",
                metadata={
                    "range": checked.label,
                    "stream_entries": in_stream,
                    "archived_rows": archived,
                },
            )
        ],
        metadata={
            "start_id": start_id,
            "end_id": end_id,
            "range": window.label,
            "entries_read": read,
            "waited_for_close_ms": waited_ms,
            "rows_new": landed,
            "batch_id": batch_id,
        },
    )


def _event_feedback(
    mqtt: MqttPublisherResource, events: pl.DataFrame, rejected: pl.DataFrame, raw: pl.DataFrame
) -> list[tuple[str, dict]]:
    """ACKs for stored events, ACK + dead letter for rejected ones (reference 004)."""
    messages: list[tuple[str, dict]] = [
        (mqtt.ack_topic(device), {"schema": 1, "event_id": event_id, "device_id": device, "status": "stored"})
        for device, event_id in events.select("device_key", "event_id").iter_rows()
    ]
    bad = rejected.filter(pl.col("topic").str.starts_with("qs/v1/") & (pl.col("stage") != "duplicate"))
    if bad.is_empty():
        return messages
    payloads = dict(
        raw.filter(pl.col("raw_id").is_in(bad["raw_id"].implode())).select("raw_id", "payload").iter_rows()
    )
    for raw_id, item, reason, detail, topic in bad.select(
        "raw_id", "item", "reason", "detail", "topic"
    ).iter_rows():
        payload = payloads.get(raw_id, b"")
        text = payload.decode("utf-8", "replace")
        device = topic.split("/")[2] if topic.count("/") >= 3 else ""
        event_id = None
        try:
            doc = json.loads(text)
            element = doc[item] if isinstance(doc, list) else doc
            event_id = element.get("event_id") if isinstance(element, dict) else None
        except (ValueError, IndexError, TypeError):
            pass
        error = f"{reason}: {detail}"
        if device:
            messages.append(
                (
                    mqtt.ack_topic(device),
                    {
                        "schema": 1,
                        "event_id": event_id,
                        "device_id": device,
                        "status": "rejected",
                        "error": error,
                    },
                )
            )
        messages.append(
            (mqtt.deadletter_topic, {"error": error, "topic": topic, "payload": text, "raw_id": raw_id})
        )
    return messages


@asset(
    partitions_def=hourly_arrival_partitions,
    backfill_policy=BackfillPolicy.multi_run(BACKFILL_HOURS_PER_RUN),
    deps=[raw_messages],
    group_name="ingest",
    check_specs=[
        AssetCheckSpec(
            "reconciliation",
            asset="telemetry",
            description="Every raw message of the hour so far is a fact row or rejected.",
        )
    ],
    description="Decoded, validated measurements and events (facts carry raw_id and batch_id lineage); "
    "everything else in `rejected` with its reason.",
)
def telemetry(
    context: AssetExecutionContext,
    config: WindowConfig,
    database: DatabaseResource,
    mqtt: MqttPublisherResource,
) -> MaterializeResult:
    settings = get_settings()
    window = run_window(context, config)
    options = DecodeOptions(
        ZoneInfo(settings.device_timezone), settings.device_ts_max_future_s, settings.device_ts_min_year
    )
    with database.connect() as conn:
        batch_id = open_batch(conn, _batch_info(context, window, []))
        raw = load_raw(conn, utc_from_ms(window.start_ms), utc_from_ms(window.end_ms))
        decoded = decode_batch(raw, load_f2_catalog(conn), options)
        measurements, bad_measurements = split_valid(decoded.measurements, MeasurementSchema)
        events, bad_events = split_valid(decoded.events, EventSchema)
        stored_m, dup_m = store_measurements(conn, measurements, batch_id)
        stored_e, dup_e = store_events(conn, events, batch_id)
        rejected = (
            pl.concat([decoded.rejected, bad_measurements, bad_events, dup_m, dup_e])
            .drop("topic")
            .join(raw.select("raw_id", "topic", "arrived_at"), on="raw_id", how="left")
        )
        rejected = rejected.unique(subset=["raw_id", "item"], keep="first", maintain_order=True)
        store_rejected(conn, rejected, raw["raw_id"], batch_id)
        duplicates = dup_m.height + dup_e.height
        finish_batch(
            conn,
            batch_id,
            raw_count=raw.height,
            measurement_count=stored_m,
            event_count=stored_e,
            rejected_count=rejected.height - duplicates,
            duplicate_count=duplicates,
        )
        hour_so_far = Window(window.hour_start_ms, window.end_ms)
        rec = reconcile(conn, utc_from_ms(hour_so_far.start_ms), utc_from_ms(hour_so_far.end_ms))

    acks = 0
    feedback: list = []
    if "dagster/backfill" not in context.run.tags:
        feedback = _event_feedback(mqtt, events, rejected, raw)
        try:
            acks = mqtt.publish_all(feedback)
        except OSError as exc:  # ConnectionError included
            context.log.warning(f"could not publish {len(feedback)} ACKs/dead letters: {exc}")
    reasons = rejected.group_by("reason").len().sort("len", descending=True)
    return MaterializeResult(
        metadata={
            "batch_id": batch_id,
            "range": window.label,
            "raw_messages": raw.height,
            "measurements": stored_m,
            "events": stored_e,
            "rejected": rejected.height - duplicates,
            "duplicates": duplicates,
            "feedback_published": f"{acks}/{len(feedback)}",
            "reject_reasons": MetadataValue.md(
                "\n".join(f"- {r}: {n}" for r, n in reasons.iter_rows()) or "none"
            ),
            "decoder_version": DECODER_VERSION,
        },
        check_results=[
            AssetCheckResult(
                check_name="reconciliation",
                passed=rec.unaccounted == 0,
                severity=AssetCheckSeverity.ERROR,
                metadata={
                    "hour_so_far": hour_so_far.label,
                    "raw": rec.raw,
                    "with_facts": rec.with_facts,
                    "rejected": rec.rejected,
                    "unaccounted": rec.unaccounted,
                },
            )
        ],
    )
