"""One micro-batch, as plain functions over a connection: what the assets run and the benchmark times.

`land_window` archives a closed arrival range of the streams into `raw_messages`; `decode_window` turns
the archived messages of a range into stored measurements and events, rejections with reasons, and the
ACKs/dead letters owed to devices.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import polars as pl
import psycopg

from dagster_project.feedback import Feedback, FeedbackTopics, event_feedback
from dagster_project.isolation import store_isolating
from dagster_project.storage import (
    BatchInfo,
    feedback_sent,
    finish_batch,
    land_raw,
    load_f2_catalog,
    load_raw,
    mark_landed,
    open_batch,
    record_feedback_sent,
    store_elements,
    store_events,
    store_measurements,
    store_rejected,
)
from dagster_project.validation import EVENT_SCHEMA, MEASUREMENT_SCHEMA, split_valid
from dagster_project.windows import Window
from iot_core.formats.batch import DecodeOptions, decode_batch
from iot_core.rows import REJECTION


@dataclass(frozen=True, slots=True)
class Landed:
    batch_id: int
    read: int  # stream entries read
    new: int  # rows not archived before


@dataclass(frozen=True, slots=True)
class Decoded:
    batch_id: int
    raw: int
    measurements: int
    events: int
    rejected: pl.DataFrame  # every rejection, duplicates included (`REJECTION` + arrived_at)
    duplicates: int
    feedback: list[Feedback] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rejected_count(self) -> int:
        """Rejections that are not redeliveries."""
        return self.rejected.height - self.duplicates

    def reasons(self) -> dict[str, int]:
        counts = self.rejected.group_by("reason").len().sort("len", descending=True)
        return dict(counts.iter_rows())


def land_window(conn: psycopg.Connection, info: BatchInfo, pages: Iterable[list[tuple]]) -> Landed:
    """Archive the stream entries of a closed range (pages of `STREAM_ENTRY` tuples), once each."""
    batch_id = open_batch(conn, info)
    read = new = 0
    for rows in pages:
        read += len(rows)
        new += land_raw(conn, rows, batch_id)
    mark_landed(conn, batch_id, read)
    return Landed(batch_id, read, new)


def decode_window(
    conn: psycopg.Connection,
    info: BatchInfo,
    window: Window,
    options: DecodeOptions,
    topics: FeedbackTopics | None,
) -> Decoded:
    """Decode, validate and store the archived messages of `window`; `topics=None` builds no feedback."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = now - clock
        clock = now

    batch_id = open_batch(conn, info)
    raw = load_raw(conn, *window.utc_bounds)
    lap("load")
    decoded = decode_batch(raw, load_f2_catalog(conn), options)
    lap("decode")
    measurements, bad_measurements = split_valid(decoded.measurements, MEASUREMENT_SCHEMA)
    events, bad_events = split_valid(decoded.events, EVENT_SCHEMA)
    lap("validate")
    stored_m, dup_m = store_isolating(conn, measurements, batch_id, store_measurements)
    stored_e, dup_e = store_isolating(conn, events, batch_id, store_events)
    rejected = (
        pl.concat([decoded.rejected, bad_measurements, bad_events, dup_m, dup_e])
        .select(REJECTION.without("topic").columns)
        .join(raw.select("raw_id", "topic", "arrived_at"), on="raw_id", how="left")
        .unique(subset=["raw_id", "item"], keep="first", maintain_order=True)
    )
    store_rejected(conn, rejected, raw["raw_id"], batch_id)
    store_elements(conn, decoded.elements, raw, batch_id)
    duplicates = (
        dup_m.filter(pl.col("stage") == "duplicate").height
        + dup_e.filter(pl.col("stage") == "duplicate").height
    )
    finish_batch(
        conn,
        batch_id,
        raw_count=raw.height,
        measurement_count=stored_m,
        event_count=stored_e,
        rejected_count=rejected.height - duplicates,
        duplicate_count=duplicates,
    )
    lap("store")
    stored_events = events.join(dup_e.select("raw_id", "item"), on=["raw_id", "item"], how="anti")
    feedback = event_feedback(topics, stored_events, rejected, raw) if topics else []
    return Decoded(batch_id, raw.height, stored_m, stored_e, rejected, duplicates, feedback, seconds)


def owed_feedback(conn: psycopg.Connection, feedback: list[Feedback], *, resend: bool) -> list[Feedback]:
    """The feedback not sent yet (all of it with `resend`): a re-run window answers each element once."""
    if resend:
        return feedback
    sent = feedback_sent(conn, [f.key for f in feedback])
    return [f for f in feedback if f.key not in sent]


def mark_feedback_sent(conn: psycopg.Connection, feedback: list[Feedback], run_id: str) -> None:
    record_feedback_sent(conn, [(*f.key, f.status) for f in feedback], run_id)
