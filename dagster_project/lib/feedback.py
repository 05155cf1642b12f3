"""ACKs and dead letters for event messages, built from what the batch already decoded (pure).

Each message names the element it answers (raw_id, item) and its kind, so that what was sent once is
not sent again when the window is re-run. They are a frame of `FEEDBACK` columns with the payload encoded:
a window of the fleet's mix answers tens of thousands of event elements, and the `stored` ACKs, nearly all
of them, are encoded column-wise; the few rejected elements' ACKs and dead letters one by one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import polars as pl

from iot_core.formats.topics import topic_device

SCHEMA = 1
DEVICE_FIELD = "{device_id}"

#: One message to a device or to the dead-letter topic, and the element it answers.
FEEDBACK = {
    "raw_id": pl.Int64,
    "item": pl.Int32,
    "kind": pl.String,  # 'ack' | 'deadletter'
    "status": pl.String,  # 'stored' | 'duplicate' | 'rejected'
    "topic": pl.String,
    "payload": pl.Binary,  # JSON
}


@dataclass(frozen=True, slots=True)
class FeedbackTopics:
    ack_template: str  # `{device_id}` is replaced
    deadletter: str

    def ack(self, device_id: str) -> str:
        return self.ack_template.format(device_id=device_id)

    def ack_expr(self, device: pl.Expr) -> pl.Expr:
        """`ack` of each device of a column."""
        parts = self.ack_template.split(DEVICE_FIELD)
        pieces: list[pl.Expr] = [pl.lit(parts[0])]
        for part in parts[1:]:
            pieces += [device, pl.lit(part)]
        return pl.concat_str(pieces)


def no_feedback() -> pl.DataFrame:
    return pl.DataFrame(schema=FEEDBACK)


def _json(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _ack(device: str, event_id: str | None, status: str, **extra: str) -> dict:
    return {"schema": SCHEMA, "event_id": event_id, "device_id": device, "status": status, **extra}


def event_feedback(
    topics: FeedbackTopics, stored: pl.DataFrame, rejected: pl.DataFrame, raw: pl.DataFrame
) -> pl.DataFrame:
    """One message per event element: `stored` for stored events, `duplicate` for redeliveries of an
    event already stored, `rejected` with the error (plus a dead letter with topic and payload) for the rest.

    `stored` has raw_id, item, device_key and event_id; `rejected` the `REJECTION` columns with the topic
    filled in; `raw` raw_id and payload. The ACK of a stored event is the JSON `_ack` gives, with the same
    keys in the same order (characters beyond ASCII as UTF-8 rather than escaped).
    """
    acks = stored.select(
        pl.col("raw_id").cast(pl.Int64),
        pl.col("item").cast(pl.Int32),
        kind=pl.lit("ack"),
        status=pl.lit("stored"),
        topic=topics.ack_expr(pl.col("device_key")),
        payload=pl.struct(
            pl.lit(SCHEMA).alias("schema"),  # positional: `schema` is a keyword of `pl.struct`
            event_id=pl.col("event_id"),
            device_id=pl.col("device_key"),
            status=pl.lit("stored"),
        )
        .struct.json_encode()
        .cast(pl.Binary),
    )
    on_events = rejected.filter(pl.col("topic").str.starts_with("qs/"))
    if on_events.is_empty():
        return acks
    return pl.concat([acks, _rejected_feedback(topics, on_events, raw)])


def _rejected_feedback(topics: FeedbackTopics, on_events: pl.DataFrame, raw: pl.DataFrame) -> pl.DataFrame:
    payloads = dict(
        raw.filter(pl.col("raw_id").is_in(on_events["raw_id"].implode()))
        .select("raw_id", "payload")
        .iter_rows()
    )
    rows: list[tuple] = []
    for raw_id, item, stage, reason, detail, topic, event_id in on_events.select(
        "raw_id", "item", "stage", "reason", "detail", "topic", "event_id"
    ).iter_rows():
        device = topic_device(topic)
        if stage == "duplicate":
            if device:
                ack = _ack(device, event_id, "duplicate")
                rows.append((raw_id, item, "ack", "duplicate", topics.ack(device), _json(ack)))
            continue
        error = f"{reason}: {detail}"
        if device:
            ack = _ack(device, event_id, "rejected", error=error)
            rows.append((raw_id, item, "ack", "rejected", topics.ack(device), _json(ack)))
        payload = payloads.get(raw_id, b"").decode("utf-8", "replace")
        letter = {"error": error, "topic": topic, "payload": payload, "raw_id": raw_id}
        rows.append((raw_id, item, "deadletter", "rejected", topics.deadletter, _json(letter)))
    return pl.DataFrame(rows, schema=FEEDBACK, orient="row")
