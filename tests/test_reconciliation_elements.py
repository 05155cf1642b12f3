"""Reconciliation counts elements, not messages: an event array whose elements do not each end in exactly
one fact row or rejection is named, even when the message as a whole has facts and rejections."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from dagster_project.batch import decode_window, land_window
from dagster_project.raw_entries import raw_row
from dagster_project.storage import BatchInfo, Reconciliation, reconcile
from dagster_project.windows import Window
from iot_core.formats.batch import DECODER_VERSION, DecodeOptions
from iot_core.streams import utc_from_ms

pytestmark = pytest.mark.services

START_MS = 1_690_000_000_000
WINDOW = Window(START_MS, START_MS + 10_000)
TOPIC = b"qs/v1/rec-ev/events"


def _event(event_id: str, **fields: object) -> dict[str, object]:
    return {"schema": 1, "event_id": event_id, "device_id": "rec-ev", "event_type": "door", **fields}


def _land_and_decode(url: str) -> int:
    """One array [a, b failing late (validation), c]; returns its raw id."""
    payload = json.dumps([_event("a"), _event("b", event_type="t" * 100), _event("c")]).encode()
    info = BatchInfo(
        run_id=f"rec-{uuid.uuid4().hex}",
        partition_key="rec",
        range_start=utc_from_ms(WINDOW.start_ms),
        range_end=utc_from_ms(WINDOW.end_ms),
        start_id=f"{WINDOW.start_ms}-0",
        end_id=f"{WINDOW.end_ms - 1}-18446744073709551615",
        streams=["rec:raw"],
        decoder_version=DECODER_VERSION,
    )
    row = raw_row("rec:raw", f"{START_MS}-0", {b"topic": TOPIC, b"payload": payload, b"rx_us": b"1"})
    with psycopg.connect(url) as conn:
        land_window(conn, info, [[row]])
        decode_window(conn, info, WINDOW, DecodeOptions(), None)
        (raw_id,) = conn.execute(
            "SELECT raw_id FROM raw_messages WHERE entry_ms = %s", (START_MS,)
        ).fetchone()
    return int(raw_id)


def _reconcile(url: str) -> Reconciliation:
    with psycopg.connect(url) as conn:
        return reconcile(conn, utc_from_ms(WINDOW.start_ms), utc_from_ms(WINDOW.end_ms))


def test_each_element_of_an_array_ends_once_and_reconciliation_counts_elements(clean_db: str) -> None:
    raw_id = _land_and_decode(clean_db)
    with psycopg.connect(clean_db) as conn:
        stored = conn.execute("SELECT item, event_id FROM events WHERE raw_id = %s ORDER BY item", (raw_id,))
        assert stored.fetchall() == [(0, "a"), (2, "c")]
        rejected = conn.execute("SELECT item, stage FROM rejected WHERE raw_id = %s", (raw_id,)).fetchall()
        assert rejected == [(1, "validate")]
        (elements,) = conn.execute(
            "SELECT elements FROM raw_elements WHERE raw_id = %s", (raw_id,)
        ).fetchone()
        assert elements == 3
    rec = _reconcile(clean_db)
    assert (rec.raw, rec.elements, rec.facts, rec.rejections, rec.unaccounted) == (1, 3, 2, 1, 0)

    # the failure seen before: `a` both stored and rejected, `c` neither. The message still has facts and
    # a rejection, and as many outcomes as elements; reconciliation names it all the same.
    with psycopg.connect(clean_db) as conn:
        conn.execute("DELETE FROM events WHERE raw_id = %s AND item = 2", (raw_id,))
        conn.execute(
            """INSERT INTO rejected (raw_id, item, stage, reason, topic, arrived_at, batch_id)
               SELECT raw_id, 0, 'store', 'database_refused', topic, arrived_at, batch_id
               FROM raw_messages WHERE raw_id = %s""",
            (raw_id,),
        )
    rec = _reconcile(clean_db)
    assert (rec.unaccounted, rec.unaccounted_sample) == (1, [raw_id])

    # an element lost outright (c neither stored nor rejected) is named too
    with psycopg.connect(clean_db) as conn:
        conn.execute("DELETE FROM rejected WHERE raw_id = %s AND item = 0", (raw_id,))
    rec = _reconcile(clean_db)
    assert (rec.facts + rec.rejections, rec.elements, rec.unaccounted) == (2, 3, 1)

    # re-running the window restores exactly one outcome per element
    _land_and_decode(clean_db)
    assert _reconcile(clean_db).unaccounted == 0
