"""Rejections as stored: an event_id repeated with other content is a conflict the device hears about (a
`rejected` ACK and a dead letter), not a `duplicate`; a redelivery stays a duplicate even when its device time
was replaced by arrival time; and a re-run keeps the batch of every rejection it finds unchanged."""

from __future__ import annotations

import json
import uuid

import polars as pl
import psycopg
import pytest

from dagster_project.lib.batch import Decoded, decode_window, land_window, window_batch
from dagster_project.lib.feedback import FeedbackTopics
from dagster_project.lib.raw_entries import raw_row
from dagster_project.lib.storage.batches import BatchInfo
from dagster_project.lib.storage.facts import DUPLICATE_CONFLICT
from dagster_project.lib.windows import Window
from iot_core.formats.batch import DecodeOptions

pytestmark = pytest.mark.services

TOPICS = FeedbackTopics("qs/v1/{device_id}/acks", "qs/v1/deadletter")
BASE_MS = 1_690_100_000_000  # 2023-07-23: far from what other tests land


def _event(device: str, event_id: str, **fields: object) -> bytes:
    doc = {"schema": 1, "event_id": event_id, "device_id": device, "event_type": "door", **fields}
    return json.dumps(doc).encode()


def _land(
    conn: psycopg.Connection, start_ms: int, messages: list[tuple[str, bytes]], per_ms: int = 1
) -> tuple[Window, BatchInfo]:
    """`messages` in arrival order from `start_ms`, `per_ms` a millisecond (from as many streams, whose
    entry ids then coincide: arrival times tie)."""
    window = Window(start_ms, start_ms + 10_000)
    streams = [f"rej:{n}" for n in range(per_ms)]
    rows = [
        raw_row(
            streams[i % per_ms],
            f"{start_ms + i // per_ms}-0",
            {b"topic": t.encode(), b"payload": p, b"rx_us": b"%d" % ((start_ms + i // per_ms) * 1000)},
        )
        for i, (t, p) in enumerate(messages)
    ]
    info = window_batch(f"rej-{uuid.uuid4().hex}", "rej", window, streams)
    land_window(conn, info, [rows])
    conn.commit()
    return window, info


def _decode(conn: psycopg.Connection, window: Window, page_rows: int | None = None) -> Decoded:
    info = window_batch(f"rej-{uuid.uuid4().hex}", "rej", window, [])
    decoded = decode_window(conn, info, window, DecodeOptions(), TOPICS, page_rows)
    conn.commit()
    return decoded


def _acks(decoded: Decoded, raw_id: int) -> list[tuple[str, str]]:
    return decoded.feedback.filter(pl.col("raw_id") == raw_id).select("kind", "status").rows()


def test_an_event_id_repeated_with_other_content_is_a_conflict_not_a_duplicate(clean_db: str) -> None:
    device = f"conf-{uuid.uuid4().hex[:6]}"
    topic = f"qs/v1/{device}/events"
    early = _event(device, "e-1", value="open")
    with psycopg.connect(clean_db) as conn:
        first, _ = _land(conn, BASE_MS, [(topic, early), (topic, _event(device, "e-2", value=1))])
        _decode(conn, first)
        later, _ = _land(
            conn,
            BASE_MS + 60_000,
            [
                (topic, early),  # a redelivery of a stored event: duplicate
                (topic, _event(device, "e-1", value="closed")),  # stored e-1 with other content
                (topic, _event(device, "e-3", ts_device="1970-01-01T00:00:00Z")),  # insane device time
                (topic, _event(device, "e-3", ts_device="1970-01-01T00:00:00Z")),  # its redelivery
                (topic, _event(device, "e-4", value=1)),
                (topic, _event(device, "e-4", value=2)),  # conflict within the window
            ],
        )
        decoded = _decode(conn, later)
        rows = conn.execute(
            """SELECT raw_id - (SELECT min(raw_id) FROM raw_messages WHERE arrived_at >= %(s)s), stage, reason
               FROM rejected WHERE arrived_at >= %(s)s AND arrived_at < %(e)s ORDER BY raw_id""",
            dict(zip("se", later.utc_bounds, strict=True)),
        ).fetchall()
        first_raw = conn.execute(
            "SELECT min(raw_id) FROM raw_messages WHERE arrived_at >= %s", (later.utc_bounds[0],)
        ).fetchone()
        stored = conn.execute(
            "SELECT event_id, value_text, value_num FROM events e JOIN devices d USING (device_id) "
            "WHERE d.device_key = %s ORDER BY event_id",
            (device,),
        ).fetchall()
    assert rows == [
        (0, "duplicate", "duplicate_device and event_id"),
        (1, "store", DUPLICATE_CONFLICT),
        (3, "duplicate", "duplicate_device and event_id"),
        (5, "store", DUPLICATE_CONFLICT),
    ]
    assert first_raw is not None
    base = first_raw[0]
    assert _acks(decoded, base) == [("ack", "duplicate")]
    assert sorted(_acks(decoded, base + 1)) == [("ack", "rejected"), ("deadletter", "rejected")]
    assert sorted(_acks(decoded, base + 5)) == [("ack", "rejected"), ("deadletter", "rejected")]
    assert _acks(decoded, base + 3) == [("ack", "duplicate")]
    assert decoded.duplicates == 2 and decoded.rejected_count == 2
    # the first content stays
    assert stored == [("e-1", "open", None), ("e-2", None, 1.0), ("e-3", None, None), ("e-4", None, 1.0)]


def _rejections(conn: psycopg.Connection, window: Window) -> list[tuple]:
    return conn.execute(
        """SELECT raw_id, item, stage, reason, detail, batch_id FROM rejected
           WHERE arrived_at >= %s AND arrived_at < %s ORDER BY raw_id, item""",
        window.utc_bounds,
    ).fetchall()


@pytest.mark.parametrize("page_rows", [None, 2])
def test_a_rerun_keeps_the_batch_of_rejections_it_finds_unchanged(
    clean_db: str, page_rows: int | None
) -> None:
    """Whole, and in pages of two whose boundary arrival times are shared (two messages a millisecond)."""
    device = f"rerun-{uuid.uuid4().hex[:6]}"
    bad = [(f"devices/{device}/temperature", b"not a number \x00"), (f"devices/{device}/x", b"NaN")]
    messages = [m for m in bad for _ in range(3)] + [(f"qs/v1/{device}/events", b"{")] * 2
    with psycopg.connect(clean_db) as conn:
        window, _ = _land(conn, BASE_MS + 120_000 + (page_rows or 0) * 60_000, messages, per_ms=2)
        first = _decode(conn, window, page_rows)
        before = _rejections(conn, window)
        assert len(before) == len(messages) and {row[5] for row in before} == {first.batch_id}
        again = _decode(conn, window, page_rows)
        assert again.batch_id != first.batch_id
        assert _rejections(conn, window) == before, "an unchanged rejection keeps its batch"
        # a rejection an older decoder described otherwise is written again, by the new batch
        changed = before[2]
        conn.execute(
            "UPDATE rejected SET detail = 'older decoder' WHERE raw_id = %s AND item = %s", changed[:2]
        )
        conn.commit()
        third = _decode(conn, window, page_rows)
        after = _rejections(conn, window)
    assert len(after) == len(before)
    assert [row for row in after if row[:2] == changed[:2]] == [(*changed[:5], third.batch_id)]
    assert [row for row in after if row[:2] != changed[:2]] == [
        row for row in before if row[:2] != changed[:2]
    ]


@pytest.mark.parametrize("page_rows", [None, 2])
def test_a_retried_run_writes_its_rejections_again_once(clean_db: str, page_rows: int | None) -> None:
    """A run retried under its run id (its batch) finds its own rejections stored: they are written again
    in place, once each, not refused as a repeated key; and an older description is replaced."""
    device = f"retry-{uuid.uuid4().hex[:6]}"
    messages = [(f"devices/{device}/temperature", b"not a number \x00"), (f"qs/v1/{device}/events", b"{")] * 3
    with psycopg.connect(clean_db) as conn:
        window, _ = _land(conn, BASE_MS + 300_000 + (page_rows or 0) * 60_000, messages, per_ms=2)
        info = window_batch(f"rej-{uuid.uuid4().hex}", "rej", window, [])
        first = decode_window(conn, info, window, DecodeOptions(), TOPICS, page_rows)
        conn.commit()
        before = _rejections(conn, window)
        assert len(before) == len(messages) and {row[5] for row in before} == {first.batch_id}
        conn.execute("UPDATE rejected SET detail = 'older decoder' WHERE raw_id = %s", (before[0][0],))
        conn.commit()
        again = decode_window(conn, info, window, DecodeOptions(), TOPICS, page_rows)
        conn.commit()
        assert again.batch_id == first.batch_id and again.rejected_count == first.rejected_count
        assert _rejections(conn, window) == before
