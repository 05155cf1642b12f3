"""Checks per hour partition. They run with every micro-batch and from the UI on any partition; each is
its body only (`hour_check` gives it the hour to judge), built on the partitions definition by
`build_hour_checks`.
"""

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    PartitionsDefinition,
)

from dagster_project.defs.ingest.shards import stream_has_entries
from dagster_project.defs.metadata import SAMPLE
from dagster_project.defs.quality.hour_check import CheckedHour, HourCheck, hour_check
from dagster_project.lib.storage.batches import landed_ranges, landed_ranges_by_shard
from dagster_project.lib.storage.quality import (
    device_freshness,
    duplicate_count,
    implausible_readings,
    reconcile,
    schema_pass_rate,
)
from dagster_project.lib.windows import Window, uncovered
from iot_core.streams import utc_from_ms


def unarchived(hour: CheckedHour) -> tuple[list[tuple[int, int]], list[Window]]:
    """The archived ranges of the checked window and its ranges with stream entries that none covers;
    with several shards, each shard's ranges without a batch of that shard (or of every stream)."""
    window = hour.window
    streams = hour.redis.streams()
    if len(streams) == 1:
        ranges = landed_ranges(hour.conn, *window.utc_bounds)
        gaps = uncovered(ranges, window.start_ms, window.end_ms)
        return ranges, [gap for gap in gaps if hour.redis.has_entries(gap)]
    by_shard = landed_ranges_by_shard(hour.conn, *window.utc_bounds, len(streams))
    missing = [
        gap
        for shard, ranges in sorted(by_shard.items())
        for gap in uncovered(ranges, window.start_ms, window.end_ms)
        if stream_has_entries(hour.redis, streams[shard], gap)
    ]
    distinct = sorted({r for ranges in by_shard.values() for r in ranges})
    return distinct, sorted(missing, key=lambda gap: gap.start_ms)


@hour_check(
    "raw_messages",
    "archive_complete",
    "Every closed window of the hour that holds stream entries has been archived. "
    "A window missing here is run again by the sensor; the check names it until it is archived.",
)
def archive_complete(hour: CheckedHour) -> AssetCheckResult:
    window = hour.window
    ranges, missing = unarchived(hour)
    return AssetCheckResult(
        passed=not missing,
        severity=AssetCheckSeverity.ERROR,
        description=None
        if not missing
        else f"{len(missing)} range(s) with stream entries are not archived, the first "
        f"{missing[0].short_label}: the sensor runs them again; if this persists, backfill the hour",
        metadata={
            "checked": window.label,
            "archived_ranges": len(ranges),
            "missing_ranges": len(missing),
            "missing_sample": MetadataValue.md(
                "\n".join(f"- {gap.short_label}" for gap in missing[:SAMPLE]) or "none"
            ),
        },
    )


@hour_check(
    "telemetry",
    "reconciliation",
    "Every element of every archived raw message of the hour so far (an event array's "
    "elements, a message's readings) is exactly one fact row (measurement or event) or one rejection with "
    "its reason; failing names the raw ids where the count does not add up.",
    blocking=True,
)
def reconciliation(hour: CheckedHour) -> AssetCheckResult:
    rec, judged_from = hour.judged(
        lambda start, end: reconcile(hour.conn, start, end, SAMPLE),
        keep=lambda rec: rec.unaccounted == 0,  # a failing part is read again until it is fixed
    )
    return AssetCheckResult(
        passed=rec.unaccounted == 0,
        severity=AssetCheckSeverity.ERROR,
        description=None
        if rec.unaccounted == 0
        else f"{rec.unaccounted} raw message(s) have elements not stored or rejected exactly once: "
        "backfill the hour",
        metadata={
            "checked": hour.window.label,
            "raw": rec.raw,
            "with_facts": rec.with_facts,
            "rejected": rec.rejected,
            "unaccounted": rec.unaccounted,
            "elements": rec.elements,
            "fact_rows": rec.facts,
            "rejection_rows": rec.rejections,
            "unaccounted_raw_ids": MetadataValue.text(
                ", ".join(str(raw_id) for raw_id in rec.unaccounted_sample) or "none"
            ),
            **judged_from.metadata(),
        },
    )


def _severity(share: float, warn: float, error: float) -> AssetCheckSeverity | None:
    """None when `share` is within the warn threshold, else the severity its size earns."""
    if share > error:
        return AssetCheckSeverity.ERROR
    if share > warn:
        return AssetCheckSeverity.WARN
    return None


@hour_check(
    "telemetry",
    "schema_pass_rate",
    "Share of the hour's raw messages rejected at topic, decode or validate (duplicates not "
    "counted), per format, stage and reason with an example of each. WARN above "
    "IOT_QUALITY_REJECT_WARN_SHARE, ERROR above IOT_QUALITY_REJECT_ERROR_SHARE.",
)
def schema_pass_rate_check(hour: CheckedHour) -> AssetCheckResult:
    rate, judged_from = hour.judged(lambda start, end: schema_pass_rate(hour.conn, start, end))
    quality = hour.quality
    severity = _severity(rate.reject_share, quality.reject_warn_share, quality.reject_error_share)
    by_format: dict[str, int] = {}
    for group in rate.groups:
        by_format[group.format] = by_format.get(group.format, 0) + group.messages
    return AssetCheckResult(
        passed=severity is None,
        severity=severity or AssetCheckSeverity.WARN,
        description=None
        if severity is None
        else f"{rate.rejected} of {rate.raw} messages ({rate.reject_share:.1%}) rejected; most: "
        f"{rate.groups[0].format} {rate.groups[0].reason} ({rate.groups[0].messages})",
        metadata={
            "checked": hour.window.label,
            "raw": rate.raw,
            "rejected": rate.rejected,
            "reject_share": round(rate.reject_share, 4),
            "pass_rate": round(1 - rate.reject_share, 4),
            **judged_from.metadata(),
            **{f"rejected_{fmt}": n for fmt, n in sorted(by_format.items())},
            "rejects": MetadataValue.md(
                "| format | stage | reason | messages | example |\n|---|---|---|---|---|\n"
                + "\n".join(
                    f"| {g.format} | {g.stage} | {g.reason} | {g.messages} | "
                    f"{g.example.replace('|', '/').replace(chr(10), ' ')} |"
                    for g in rate.groups[: SAMPLE * 3]
                )
                if rate.groups
                else "none"
            ),
        },
    )


@hour_check(
    "telemetry",
    "plausibility",
    "Numeric readings of the hour outside their metric's plausible range (table "
    "`metric_ranges`, editable), per metric. The readings are kept and flagged in the view "
    "`implausible_measurements`. WARN on any, ERROR above IOT_QUALITY_IMPLAUSIBLE_ERROR_SHARE of the "
    "readings that have a range.",
)
def plausibility(hour: CheckedHour) -> AssetCheckResult:
    judged, judged_from = hour.judged(lambda start, end: implausible_readings(hour.conn, start, end))
    metrics = judged.metrics
    readings = sum(m.readings for m in metrics)
    implausible = sum(m.implausible for m in metrics)
    share = implausible / readings if readings else 0.0
    severity = _severity(share, 0.0, hour.quality.implausible_error_share) if implausible else None
    flagged = [m for m in metrics if m.implausible]
    return AssetCheckResult(
        passed=severity is None,
        severity=severity or AssetCheckSeverity.WARN,
        description=None
        if severity is None
        else f"{implausible} of {readings} readings ({share:.1%}) out of range in {len(flagged)} "
        f"metric(s), most in {flagged[0].metric}; kept, see view implausible_measurements",
        metadata={
            "checked": hour.window.label,
            "readings_with_range": readings,
            "implausible": implausible,
            "implausible_share": round(share, 4),
            "metrics_checked": len(metrics),
            **judged_from.metadata(),
            "implausible_by_metric": MetadataValue.md(
                "| metric | range | implausible | readings | example |\n|---|---|---|---|---|\n"
                + "\n".join(
                    f"| {m.metric} | {m.min_value} .. {m.max_value} | {m.implausible} | {m.readings} | "
                    f"{m.example} |"
                    for m in flagged[: SAMPLE * 3]
                )
                if flagged
                else "none"
            ),
        },
    )


@hour_check(
    "telemetry",
    "duplicates",
    "Redeliveries recognised in the hour (stage 'duplicate' in `rejected`: the same event_id, "
    "or device + metric + device timestamp, again). At-least-once delivery makes a few normal; WARN above "
    "IOT_QUALITY_DUPLICATE_WARN_SHARE of the hour's messages, ERROR above IOT_QUALITY_DUPLICATE_ERROR_SHARE.",
)
def duplicates(hour: CheckedHour) -> AssetCheckResult:
    dup, judged_from = hour.judged(lambda start, end: duplicate_count(hour.conn, start, end))
    quality = hour.quality
    severity = _severity(dup.share, quality.duplicate_warn_share, quality.duplicate_error_share)
    return AssetCheckResult(
        passed=severity is None,
        severity=severity or AssetCheckSeverity.WARN,
        description=None
        if severity is None
        else f"{dup.duplicates} of {dup.raw} messages ({dup.share:.1%}) were redeliveries: "
        "look for reconnecting clients or a listener that restarts",
        metadata={
            "checked": hour.window.label,
            "raw": dup.raw,
            "duplicates": dup.duplicates,
            "duplicate_share": round(dup.share, 4),
            **judged_from.metadata(),
            **{f"duplicates_{fmt}": n for fmt, n in dup.by_format.items()},
        },
    )


@hour_check(
    "telemetry",
    "device_freshness",
    "Devices that have sent before but nothing for longer than IOT_QUALITY_SILENT_AFTER_S "
    "before the end of the checked hour (WARN, listed by device key), and the age of the newest reading "
    "(ERROR when even that is older: nothing arrives at all). Uses `devices.last_seen`. Dagster's own "
    "`freshness_check` says whether the hour was materialized by its deadline.",
)
def device_freshness_check(hour: CheckedHour) -> AssetCheckResult:
    at = utc_from_ms(hour.window.end_ms)
    quality = hour.quality
    fresh = device_freshness(hour.conn, at, quality.silent_after_s, SAMPLE * 5)
    age_s = (at - fresh.newest).total_seconds() if fresh.newest else None
    stale = age_s is not None and age_s > quality.silent_after_s
    severity = AssetCheckSeverity.ERROR if stale else AssetCheckSeverity.WARN
    description = None
    if stale:
        description = f"the newest reading is {age_s:.0f} s old at {at:%Y-%m-%d %H:%M:%S}: nothing arrives"
    elif fresh.silent_total:
        description = (
            f"{fresh.silent_total} device(s) silent for over {quality.silent_after_s} s: "
            + ", ".join(key for key, _ in fresh.silent[:SAMPLE])
        )
    return AssetCheckResult(
        passed=description is None,
        severity=severity,
        description=description,
        metadata={
            "checked_at": at.isoformat(),
            "newest_reading_age_s": round(age_s, 1) if age_s is not None else -1,
            "devices_seen": fresh.devices_seen,
            "silent_devices": fresh.silent_total,
            "silent_list": MetadataValue.md(
                "\n".join(f"- {key}: last seen {seen.isoformat()}" for key, seen in fresh.silent) or "none"
            ),
        },
    )


HOUR_CHECKS: tuple[HourCheck, ...] = (
    archive_complete,
    reconciliation,
    schema_pass_rate_check,
    plausibility,
    duplicates,
    device_freshness_check,
)


def build_hour_checks(partitions: PartitionsDefinition) -> list[AssetChecksDefinition]:
    """The checks per hour partition, on `partitions`."""
    return [check.build(partitions) for check in HOUR_CHECKS]
