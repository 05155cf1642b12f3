"""ACKs and dead letters for event messages, built from what the batch already decoded (pure).

Each message names the element it answers (raw_id, item) and its kind, so that what was sent once is
not sent again when the window is re-run.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from iot_core.formats.topics import topic_device

SCHEMA = 1


@dataclass(frozen=True, slots=True)
class FeedbackTopics:
    ack_template: str  # `{device_id}` is replaced
    deadletter: str

    def ack(self, device_id: str) -> str:
        return self.ack_template.format(device_id=device_id)


@dataclass(frozen=True, slots=True)
class Feedback:
    raw_id: int
    item: int
    kind: str  # 'ack' | 'deadletter'
    topic: str
    body: dict

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.raw_id, self.item, self.kind)

    @property
    def status(self) -> str:
        return str(self.body.get("status", "rejected"))


def _ack(device: str, event_id: str | None, status: str, **extra: str) -> dict:
    return {"schema": SCHEMA, "event_id": event_id, "device_id": device, "status": status, **extra}


def event_feedback(
    topics: FeedbackTopics, stored: pl.DataFrame, rejected: pl.DataFrame, raw: pl.DataFrame
) -> list[Feedback]:
    """One message per event element: `stored` for stored events, `duplicate` for redeliveries of an
    event already stored, `rejected` with the error (plus a dead letter with topic and payload) for the rest.

    `stored` has raw_id, item, device_key and event_id; `rejected` the `REJECTION` columns with the topic
    filled in; `raw` raw_id and payload.
    """
    messages = [
        Feedback(raw_id, item, "ack", topics.ack(device), _ack(device, event_id, "stored"))
        for raw_id, item, device, event_id in stored.select(
            "raw_id", "item", "device_key", "event_id"
        ).iter_rows()
    ]
    on_events = rejected.filter(pl.col("topic").str.starts_with("qs/"))
    if on_events.is_empty():
        return messages
    payloads = dict(
        raw.filter(pl.col("raw_id").is_in(on_events["raw_id"].implode()))
        .select("raw_id", "payload")
        .iter_rows()
    )
    for raw_id, item, stage, reason, detail, topic, event_id in on_events.select(
        "raw_id", "item", "stage", "reason", "detail", "topic", "event_id"
    ).iter_rows():
        device = topic_device(topic)
        if stage == "duplicate":
            if device:
                ack = _ack(device, event_id, "duplicate")
                messages.append(Feedback(raw_id, item, "ack", topics.ack(device), ack))
            continue
        error = f"{reason}: {detail}"
        if device:
            ack = _ack(device, event_id, "rejected", error=error)
            messages.append(Feedback(raw_id, item, "ack", topics.ack(device), ack))
        payload = payloads.get(raw_id, b"").decode("utf-8", "replace")
        letter = {"error": error, "topic": topic, "payload": payload, "raw_id": raw_id}
        messages.append(Feedback(raw_id, item, "deadletter", topics.deadletter, letter))
    return messages
