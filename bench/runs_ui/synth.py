"""Micro-batch runs written into a Dagster instance through Dagster's storage APIs, without executing them.

Each run looks like one the sensor launched for a closed 60 s window: `micro_batch_job`, the sensor's
tags (`run_request`) plus the partition, created, started and finished a few seconds after its window
closed (SUCCESS), with ASSET_MATERIALIZATION_PLANNED and ASSET_MATERIALIZATION events of `raw_messages`
and `telemetry` for its hour partition (metadata shaped like the assets'), and the `reconciliation` check's
evaluation. A run record goes in with `add_historical_run` (so its creation time lies in the past, as
retention needs), run events through `handle_new_event` (which sets the run's status and start/end time
from the event's timestamp), materializations of many runs at once with `store_event_batch` (one INSERT
on PostgreSQL; one event at a time on SQLite, which has no batch path).
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetKey,
    AssetMaterialization,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    EventLogEntry,
    MetadataValue,
)

from dagster_project.dagster_internals import (
    PARTITION_NAME_TAG,
    RUN_KEY_TAG,
    SENSOR_NAME_TAG,
    AssetMaterializationPlannedData,
    StepMaterializationData,
)
from dagster_project.defs.ingest.jobs import MICRO_BATCH_JOB
from dagster_project.defs.ingest.sensors import run_request
from dagster_project.defs.metadata import reasons_metadata
from dagster_project.lib.windows import Window
from iot_core.formats.batch import DECODER_VERSION
from iot_core.streams import id_range, utc_from_ms

JOB = MICRO_BATCH_JOB
ASSETS = (AssetKey("raw_messages"), AssetKey("telemetry"))
SELECTION = frozenset({*ASSETS, AssetKey("hourly_rollups")})
CHECK = AssetCheckKey(AssetKey("telemetry"), "reconciliation")
#: seconds from a window's close to its run's creation, start and end (a quiet machine's run)
CREATED_S, STARTED_S, ENDED_S = 1.0, 3.0, 6.0


@dataclass(frozen=True, slots=True)
class Planned:
    """One synthetic run: its window and the run record."""

    window: Window
    run: DagsterRun

    @property
    def closed_s(self) -> float:
        return self.window.end_ms / 1000


def plan_run(window: Window) -> Planned:
    request = run_request(window)
    tags = {
        **request.tags,
        PARTITION_NAME_TAG: window.partition_key,
        SENSOR_NAME_TAG: "micro_window_sensor",
        RUN_KEY_TAG: window.run_key,
    }
    run = DagsterRun(
        job_name=JOB,
        run_id=str(uuid.uuid4()),
        run_config=request.run_config,
        asset_selection=SELECTION,
        status=DagsterRunStatus.NOT_STARTED,
        tags=tags,
    )
    return Planned(window, run)


def windows(first_ms: int, count: int, window_ms: int) -> Iterator[Window]:
    for n in range(count):
        start = first_ms + n * window_ms
        yield Window(start, start + window_ms)


def _entry(planned: Planned, at_s: float, event: DagsterEvent) -> EventLogEntry:
    return EventLogEntry(
        error_info=None,
        level=logging.DEBUG,
        user_message=event.message or "",
        run_id=planned.run.run_id,
        timestamp=at_s,
        step_key=event.step_key,
        job_name=JOB,
        dagster_event=event,
    )


def _event(kind: DagsterEventType, data: object = None, step: str | None = None) -> DagsterEvent:
    return DagsterEvent(
        event_type_value=kind.value,
        job_name=JOB,
        event_specific_data=data,  # ty: ignore[invalid-argument-type]
        message=f"{kind.value} (synthesised)",
        step_key=step,
    )


def run_event(planned: Planned, kind: DagsterEventType, at_s: float) -> EventLogEntry:
    return _entry(planned, at_s, _event(kind))


def planned_event(planned: Planned, asset: AssetKey) -> EventLogEntry:
    data = AssetMaterializationPlannedData(asset, partition=planned.window.partition_key)
    return _entry(
        planned, planned.closed_s + CREATED_S, _event(DagsterEventType.ASSET_MATERIALIZATION_PLANNED, data)
    )


def metadata(asset: AssetKey, window: Window, rng: random.Random) -> dict[str, object]:
    """Metadata with the keys and kinds of values the asset reports for a micro-window."""
    start_id, end_id = id_range(window.start_ms, window.end_ms)
    raw = rng.randint(900, 1300)
    batch_id = MetadataValue.text(str(rng.randint(1, 10**9)))
    if asset.path[-1] == "raw_messages":
        return {
            "range": window.label,
            "start_id": start_id,
            "end_id": end_id,
            "entries_read": raw,
            "rows_new": raw,
            "waited_for_close_ms": rng.randint(0, 600),
            "batch_id": batch_id,
        }
    rejected = rng.randint(0, raw // 20)
    reasons = {"no_such_topic": rejected // 2, "not_a_number": rejected - rejected // 2}
    return {
        "range": window.label,
        "raw_messages": raw,
        "measurements": raw - rejected,
        "events": rng.randint(0, 50),
        "rejected": rejected,
        "duplicates": 0,
        **reasons_metadata({r: n for r, n in reasons.items() if n}),
        "feedback_published": "0/0",
        "feedback_already_sent": 0,
        **{
            f"seconds_{stage}": round(rng.uniform(0.01, 0.2), 4)
            for stage in ("load", "decode", "validate", "store")
        },
        "batch_id": batch_id,
        "decoder_version": DECODER_VERSION,
    }


def materialization(planned: Planned, asset: AssetKey, rng: random.Random) -> EventLogEntry:
    data = StepMaterializationData(
        AssetMaterialization(
            asset_key=asset,
            partition=planned.window.partition_key,
            metadata=metadata(asset, planned.window, rng),  # ty: ignore[invalid-argument-type]
        )
    )
    at_s = planned.closed_s + ENDED_S - 1.0
    return _entry(planned, at_s, _event(DagsterEventType.ASSET_MATERIALIZATION, data, step=asset.path[-1]))


def check_evaluation(planned: Planned) -> EventLogEntry:
    data = AssetCheckEvaluation(
        asset_key=CHECK.asset_key,
        check_name=CHECK.name,
        passed=True,
        metadata={"raw_messages": 1000, "missing": 0},
        partition=planned.window.partition_key,
    )
    at_s = planned.closed_s + ENDED_S - 0.5
    return _entry(planned, at_s, _event(DagsterEventType.ASSET_CHECK_EVALUATION, data, step="telemetry"))


def write_runs(instance: DagsterInstance, chunk: list[Planned], rng: random.Random, checks: bool) -> None:
    """Store `chunk`'s runs with all their events; materializations of each asset in one batch."""
    for planned in chunk:
        instance.run_storage.add_historical_run(
            planned.run, utc_from_ms(int((planned.closed_s + CREATED_S) * 1000))
        )
    for planned in chunk:
        instance.handle_new_event(
            run_event(planned, DagsterEventType.RUN_START, planned.closed_s + STARTED_S)
        )
        for asset in ASSETS:
            instance.handle_new_event(planned_event(planned, asset))
    for asset in ASSETS:
        instance.event_log_storage.store_event_batch([materialization(p, asset, rng) for p in chunk])
    for planned in chunk:
        if checks:
            instance.handle_new_event(check_evaluation(planned))
        instance.handle_new_event(
            run_event(planned, DagsterEventType.RUN_SUCCESS, planned.closed_s + ENDED_S)
        )
