"""The ACKs of stored events, encoded column-wise, are the JSON the one-by-one encoding gives (same keys,
same order, same values) for any device key and event id, hostile ones included; their topics are the
template's; the rejected elements' ACKs and dead letters are as before."""

from __future__ import annotations

import json

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from dagster_project.lib.feedback import FEEDBACK, FeedbackTopics, event_feedback

TOPICS = FeedbackTopics("qs/v1/{device_id}/acks", "qs/v1/deadletter")
REJECTED_COLUMNS = ("raw_id", "item", "stage", "reason", "detail", "topic", "event_id")
texts = st.text(st.characters(codec="utf-8"), max_size=40)


def _stored(rows: list[tuple[str, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "raw_id": list(range(1, len(rows) + 1)),
            "item": [n % 3 for n in range(len(rows))],
            "device_key": [device for device, _ in rows],
            "event_id": [event_id for _, event_id in rows],
        },
        schema={"raw_id": pl.Int64, "item": pl.Int32, "device_key": pl.String, "event_id": pl.String},
    )


def _no_rejections() -> pl.DataFrame:
    return pl.DataFrame(
        schema=dict.fromkeys(REJECTED_COLUMNS, pl.String) | {"raw_id": pl.Int64, "item": pl.Int32}
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(texts, st.none() | texts), max_size=30))
def test_stored_acks_are_the_json_of_each_ack(rows: list[tuple[str, str | None]]) -> None:
    raw = pl.DataFrame(schema={"raw_id": pl.Int64, "payload": pl.Binary})
    feedback = event_feedback(TOPICS, _stored(rows), _no_rejections(), raw)
    assert feedback.schema == pl.Schema(FEEDBACK)
    assert feedback.height == len(rows)
    for (device, event_id), row in zip(rows, feedback.iter_rows(named=True), strict=True):
        body = {"schema": 1, "event_id": event_id, "device_id": device, "status": "stored"}
        assert list(json.loads(row["payload"]).items()) == list(body.items())
        assert (row["kind"], row["status"], row["topic"]) == ("ack", "stored", TOPICS.ack(device))


def test_a_template_naming_the_device_twice_or_not_at_start() -> None:
    topics = FeedbackTopics("fleet/{device_id}/acks/{device_id}", "dl")
    raw = pl.DataFrame(schema={"raw_id": pl.Int64, "payload": pl.Binary})
    feedback = event_feedback(topics, _stored([("d-1", "e")]), _no_rejections(), raw)
    assert feedback["topic"].to_list() == ["fleet/d-1/acks/d-1"]


def test_rejected_and_redelivered_elements_are_answered_with_their_reason_and_a_dead_letter() -> None:
    rejected = pl.DataFrame(
        [
            (7, 1, "validate", "schema", "event_type too long", "qs/v1/dev-7/events", "e-2"),
            (8, 0, "duplicate", "duplicate_event", "same as raw 3", "qs/v1/dev-8/events", "e-1"),
            (9, 0, "decode", "json", "not JSON", "qs/v1/dev-9/events", None),
            (10, 0, "decode", "json", "not JSON", "devices/p/temperature", None),  # not an event topic
        ],
        schema=dict.fromkeys(REJECTED_COLUMNS, pl.String) | {"raw_id": pl.Int64, "item": pl.Int32},
        orient="row",
    )
    raw = pl.DataFrame({"raw_id": [7, 8, 9, 10], "payload": [b"[{}]", b"{}", b"\xff\xfe", b"x"]})
    feedback = event_feedback(TOPICS, _stored([]), rejected, raw)
    rows = [
        (r["raw_id"], r["kind"], r["status"], r["topic"], json.loads(r["payload"]))
        for r in feedback.iter_rows(named=True)
    ]
    assert rows == [
        (
            7,
            "ack",
            "rejected",
            "qs/v1/dev-7/acks",
            {
                "schema": 1,
                "event_id": "e-2",
                "device_id": "dev-7",
                "status": "rejected",
                "error": "schema: event_type too long",
            },
        ),
        (
            7,
            "deadletter",
            "rejected",
            "qs/v1/deadletter",
            {
                "error": "schema: event_type too long",
                "topic": "qs/v1/dev-7/events",
                "payload": "[{}]",
                "raw_id": 7,
            },
        ),
        (
            8,
            "ack",
            "duplicate",
            "qs/v1/dev-8/acks",
            {"schema": 1, "event_id": "e-1", "device_id": "dev-8", "status": "duplicate"},
        ),
        (
            9,
            "ack",
            "rejected",
            "qs/v1/dev-9/acks",
            {
                "schema": 1,
                "event_id": None,
                "device_id": "dev-9",
                "status": "rejected",
                "error": "json: not JSON",
            },
        ),
        (
            9,
            "deadletter",
            "rejected",
            "qs/v1/deadletter",
            {
                "error": "json: not JSON",
                "topic": "qs/v1/dev-9/events",
                "payload": "\ufffd\ufffd",
                "raw_id": 9,
            },
        ),
    ]
