"""ACKs and dead letters for event messages, built from what the batch already decoded (pure)."""

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


def _ack(device: str, event_id: str | None, status: str, **extra: str) -> dict:
    return {"schema": SCHEMA, "event_id": event_id, "device_id": device, "status": status, **extra}


def event_feedback(
    topics: FeedbackTopics, stored: pl.DataFrame, rejected: pl.DataFrame, raw: pl.DataFrame
) -> list[tuple[str, dict]]:
    """One message per event element: `stored` for stored events, `duplicate` for redeliveries of an
    event already stored, `rejected` with the error (plus a dead letter with topic and payload) for the rest.

    `stored` has device_key and event_id; `rejected` the `REJECTION` columns with the topic filled in;
    `raw` raw_id and payload.
    """
    messages: list[tuple[str, dict]] = [
        (topics.ack(device), _ack(device, event_id, "stored"))
        for device, event_id in stored.select("device_key", "event_id").iter_rows()
    ]
    on_events = rejected.filter(pl.col("topic").str.starts_with("qs/"))
    if on_events.is_empty():
        return messages
    payloads = dict(
        raw.filter(pl.col("raw_id").is_in(on_events["raw_id"].implode()))
        .select("raw_id", "payload")
        .iter_rows()
    )
    for raw_id, stage, reason, detail, topic, event_id in on_events.select(
        "raw_id", "stage", "reason", "detail", "topic", "event_id"
    ).iter_rows():
        device = topic_device(topic)
        if stage == "duplicate":
            if device:
                messages.append((topics.ack(device), _ack(device, event_id, "duplicate")))
            continue
        error = f"{reason}: {detail}"
        if device:
            messages.append((topics.ack(device), _ack(device, event_id, "rejected", error=error)))
        payload = payloads.get(raw_id, b"").decode("utf-8", "replace")
        messages.append(
            (topics.deadletter, {"error": error, "topic": topic, "payload": payload, "raw_id": raw_id})
        )
    return messages
