"""One micro-batch, as plain functions over a connection: what the assets run and the benchmark times.

`land_window` archives a closed arrival range of the streams into `raw_messages`; `decode_window` turns
the archived messages of a range into stored measurements and events, rejections with reasons, and the
ACKs/dead letters owed to devices.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import polars as pl
import psycopg

from dagster_project.lib.feedback import FeedbackTopics, event_feedback, no_feedback
from dagster_project.lib.isolation import store_isolating
from dagster_project.lib.read_ahead import read_ahead
from dagster_project.lib.storage.batches import BatchInfo, finish_batch, mark_landed, open_batch
from dagster_project.lib.storage.catalog import load_f2_catalog
from dagster_project.lib.storage.facts import store_elements, store_events, store_measurements, store_rejected
from dagster_project.lib.storage.feedback import feedback_sent, record_feedback_sent
from dagster_project.lib.storage.raw_archive import land_raw, load_raw_pages
from dagster_project.lib.storage.redeliveries import copy_rejections, redelivered_copies
from dagster_project.lib.validation import EVENT_SCHEMA, MEASUREMENT_SCHEMA, split_valid
from dagster_project.lib.windows import Window
from iot_core.formats.batch import DECODER_VERSION, DecodeOptions, decode_batch
from iot_core.formats.f2_messages import F2Catalog
from iot_core.rows import DECODE_INPUT, REJECTION, STREAM_ENTRY
from iot_core.settings import Settings
from iot_core.streams import utc_from_ms

#: A rejection as `decode_window` reports it: with the topic and arrival time of its raw message.
_STORED_REJECTION = REJECTION.without("topic").plus("topic", "arrived_at")


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
    feedback: pl.DataFrame = field(default_factory=no_feedback)  # `feedback.FEEDBACK` columns
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rejected_count(self) -> int:
        """Rejections that are not redeliveries."""
        return self.rejected.height - self.duplicates

    def reasons(self) -> dict[str, int]:
        counts = self.rejected.group_by("reason").len().sort("len", descending=True)
        return dict(counts.iter_rows())


_ARRIVED_AT = STREAM_ENTRY.columns.index("arrived_at")
#: How long after its first copy a message the broker sent again is still recognised as a copy, unless
#: the caller says otherwise: the setting's default.
REDELIVERY_HORIZON = timedelta(seconds=Settings.model_fields["redelivery_horizon_s"].default)


def window_batch(
    run_id: str,
    partition_key: str,
    window: Window,
    streams: list[str],
    backfill: str | None = None,
    shard: int | None = None,
) -> BatchInfo:
    """The batch of run `run_id` (of `backfill`, if any) over `window` of `streams` (its id range as
    XRANGE takes it), of one `shard` or (None) of every stream."""
    start_id, end_id = window.id_range
    return BatchInfo(
        run_id=run_id,
        partition_key=partition_key,
        range_start=utc_from_ms(window.start_ms),
        range_end=utc_from_ms(window.end_ms),
        start_id=start_id,
        end_id=end_id,
        streams=streams,
        decoder_version=DECODER_VERSION,
        backfill=backfill,
        shard=shard,
    )


def land_window(conn: psycopg.Connection, info: BatchInfo, pages: Iterable[list[tuple]]) -> Landed:
    """Archive the stream entries of a closed range (pages of `STREAM_ENTRY` tuples), once each."""
    batch_id = open_batch(conn, info)
    read = new = 0
    oldest: datetime | None = None
    for rows in pages:
        read += len(rows)
        new += land_raw(conn, rows, batch_id)
        if rows:
            first = min(row[_ARRIVED_AT] for row in rows)
            oldest = first if oldest is None else min(oldest, first)
    mark_landed(conn, batch_id, read, oldest)
    return Landed(batch_id, read, new)


def decode_window(
    conn: psycopg.Connection,
    info: BatchInfo,
    window: Window,
    options: DecodeOptions,
    topics: FeedbackTopics | None,
    page_rows: int | None = None,
    reader: psycopg.Connection | None = None,
    redelivery_horizon: timedelta = REDELIVERY_HORIZON,
    stream: str | None = None,
    feedback_sink: Callable[[pl.DataFrame], None] | None = None,
) -> Decoded:
    """Decode, validate and store the archived messages of `window`; `topics=None` builds no feedback.

    The window is read and stored `page_rows` messages at a time (all at once with None), in arrival
    order, so memory is bounded by the page, not the window. Each page is committed once stored, so the
    window's first messages are queryable while its later pages are decoded; the batch row is stamped by
    each page's transaction (see `verdicts`) and finished by the last one. A run that fails part way is
    run again over the whole window, which stores nothing twice. A redelivery whose first copy is on an
    earlier page is found by the store step's look-up of the stored key, so it is rejected as a duplicate
    as within one page.

    With a `reader` (a second connection, seeing what is committed) the next page is loaded on it while
    the current one is decoded and stored; the window must then be archived by a committed transaction.
    A message the broker sent again whose first copy arrived at most `redelivery_horizon` before it is a
    duplicate of that copy (`storage.redeliveries`). With `stream`, only that stream's messages are
    decoded (a shard's run: the other shards' runs decode theirs). `feedback_sink` is handed each page's
    feedback once the page is committed (on `conn`, between pages), so that it can be sent while the next
    page is decoded.
    """
    totals = _Totals()
    batch_id = open_batch(conn, info)
    catalog = load_f2_catalog(conn)
    if reader is None:
        pages = load_raw_pages(conn, *window.utc_bounds, page=page_rows, stream=stream)
    else:
        pages = read_ahead(load_raw_pages(reader, *window.utc_bounds, page=page_rows, stream=stream))
    with closing(pages):
        while True:
            clock = time.perf_counter()
            raw = next(pages, None)
            totals.lap("load", clock)
            if raw is None:
                break
            open_batch(conn, info)  # this page's transaction writes the batch's rows
            _decode_page(conn, raw, catalog, options, topics, batch_id, totals, redelivery_horizon, stream)
            clock = time.perf_counter()
            conn.commit()
            totals.lap("store", clock)
            if feedback_sink is not None and topics is not None:
                clock = time.perf_counter()
                feedback_sink(totals.feedback[-1])
                totals.lap("feedback", clock)
    clock = time.perf_counter()
    rejected = pl.concat(totals.rejected) if totals.rejected else _STORED_REJECTION.empty()
    finish_batch(
        conn,
        batch_id,
        raw_count=totals.raw,
        measurement_count=totals.measurements,
        event_count=totals.events,
        rejected_count=rejected.height - totals.duplicates,
        duplicate_count=totals.duplicates,
    )
    totals.lap("store", clock)
    return Decoded(
        batch_id,
        totals.raw,
        totals.measurements,
        totals.events,
        rejected,
        totals.duplicates,
        pl.concat(totals.feedback) if totals.feedback else no_feedback(),
        totals.seconds,
    )


@dataclass(slots=True)
class _Totals:
    """What the pages of one window add up to."""

    raw: int = 0
    measurements: int = 0
    events: int = 0
    duplicates: int = 0
    rejected: list[pl.DataFrame] = field(default_factory=list)
    feedback: list[pl.DataFrame] = field(default_factory=list)
    seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("load", "decode", "validate", "store", "feedback"), 0.0)
    )

    def lap(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now


def _decode_page(
    conn: psycopg.Connection,
    raw: pl.DataFrame,
    catalog: F2Catalog,
    options: DecodeOptions,
    topics: FeedbackTopics | None,
    batch_id: int,
    totals: _Totals,
    redelivery_horizon: timedelta,
    stream: str | None,
) -> None:
    clock = time.perf_counter()
    copies = redelivered_copies(conn, raw, redelivery_horizon)
    originals = raw.join(copies.select("raw_id"), on="raw_id", how="anti") if copies.height else raw
    decoded = decode_batch(originals.select(DECODE_INPUT.columns), catalog, options)
    clock = totals.lap("decode", clock)
    measurements, bad_measurements = split_valid(decoded.measurements, MEASUREMENT_SCHEMA)
    events, bad_events = split_valid(decoded.events, EVENT_SCHEMA)
    clock = totals.lap("validate", clock)
    stored_m, dup_m = store_isolating(conn, measurements, batch_id, store_measurements)
    stored_e, dup_e = store_isolating(conn, events, batch_id, store_events)
    rejected = (
        pl.concat([copy_rejections(copies), decoded.rejected, bad_measurements, bad_events, dup_m, dup_e])
        .select(REJECTION.without("topic").columns)
        .join(raw.select("raw_id", "topic", "arrived_at"), on="raw_id", how="left")
        .unique(subset=["raw_id", "item"], keep="first", maintain_order=True)
    )
    store_rejected(conn, rejected, raw, batch_id, stream)
    store_elements(conn, decoded.elements, raw, batch_id, stream)
    totals.lap("store", clock)
    totals.raw += raw.height
    totals.measurements += stored_m
    totals.events += stored_e
    totals.duplicates += (
        copies.height
        + dup_m.filter(pl.col("stage") == "duplicate").height
        + dup_e.filter(pl.col("stage") == "duplicate").height
    )
    totals.rejected.append(rejected)
    if topics:
        clock = time.perf_counter()
        stored_events = events.join(dup_e.select("raw_id", "item"), on=["raw_id", "item"], how="anti")
        totals.feedback.append(event_feedback(topics, stored_events, rejected, raw))
        totals.lap("feedback", clock)


class OwedFeedback:
    """What a run owes devices, page by page: each page's feedback less what was sent before (all of it
    with `resend`: a re-run window answers each element once), handed to `sender` (`FeedbackSender.send`)."""

    def __init__(self, conn: psycopg.Connection, sender: _Sender, *, resend: bool) -> None:
        self.conn = conn
        self.sender = sender
        self.resend = resend
        self.pages: list[pl.DataFrame] = []

    @property
    def count(self) -> int:
        """Messages owed so far."""
        return sum(page.height for page in self.pages)

    def send(self, feedback: pl.DataFrame) -> None:
        owed = owed_feedback(self.conn, feedback, resend=self.resend)
        self.pages.append(owed)
        self.sender.send(owed)

    def frame(self) -> pl.DataFrame:
        return pl.concat(self.pages) if self.pages else no_feedback()


class _Sender(Protocol):
    def send(self, feedback: pl.DataFrame) -> None: ...


def owed_feedback(conn: psycopg.Connection, feedback: pl.DataFrame, *, resend: bool) -> pl.DataFrame:
    """The feedback not sent yet (all of it with `resend`): a re-run window answers each element once."""
    if resend or feedback.is_empty():
        return feedback
    sent = feedback_sent(conn, feedback["raw_id"].min(), feedback["raw_id"].max())  # type: ignore[arg-type]
    if sent.is_empty():
        return feedback
    return feedback.join(sent, on=["raw_id", "item", "kind"], how="anti")


def mark_feedback_sent(conn: psycopg.Connection, feedback: pl.DataFrame, run_id: str) -> None:
    record_feedback_sent(conn, feedback.select("raw_id", "item", "kind", "status"), run_id)
