"""Reconciliation counts elements, not messages: an event array whose elements do not each end in exactly
one fact row or rejection is named, even when the message as a whole has facts and rejections."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from dagster_project.lib.batch import decode_window, land_window
from dagster_project.lib.raw_entries import raw_row
from dagster_project.lib.storage.batches import BatchInfo
from dagster_project.lib.storage.quality import Reconciliation, reconcile
from dagster_project.lib.windows import Window
from iot_core.formats.batch import DECODER_VERSION, DecodeOptions
from iot_core.streams import utc_from_ms

pytestmark = pytest.mark.services

START_MS = 1_690_000_000_000
WINDOW = Window(START_MS, START_MS + 10_000)
TOPIC = b"qs/v1/rec-ev/events"
READING_TOPIC = b"devices/rec-pl/temperature"


def _event(event_id: str, **fields: object) -> dict[str, object]:
    return {"schema": 1, "event_id": event_id, "device_id": "rec-ev", "event_type": "door", **fields}


def _land_and_decode(url: str, *, reading: bool = False) -> int:
    """One array [a, b failing late (validation), c], and with `reading` a plain reading after it; returns
    the array's raw id."""
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
    rows = [raw_row("rec:raw", f"{START_MS}-0", {b"topic": TOPIC, b"payload": payload, b"rx_us": b"1"})]
    if reading:
        fields = {b"topic": READING_TOPIC, b"payload": b"21.5", b"rx_us": b"2"}
        rows.append(raw_row("rec:raw", f"{START_MS + 1}-0", fields))
    with psycopg.connect(url) as conn:
        land_window(conn, info, [rows])
        decode_window(conn, info, WINDOW, DecodeOptions(), None)
        (raw_id,) = conn.execute(
            "SELECT raw_id FROM raw_messages WHERE entry_ms = %s", (START_MS,)
        ).fetchone()
    return int(raw_id)


def _reconcile(url: str) -> Reconciliation:
    with psycopg.connect(url) as conn:
        return reconcile(conn, utc_from_ms(WINDOW.start_ms), utc_from_ms(WINDOW.end_ms))


def _reject_first_element(url: str, raw_id: int) -> None:
    """A rejection of element 0 of raw message `raw_id`, as if the store step had refused it."""
    with psycopg.connect(url) as conn:
        conn.execute(
            """INSERT INTO rejected (raw_id, item, stage, reason, topic, arrived_at, batch_id)
               SELECT raw_id, 0, 'store', 'database_refused', topic, arrived_at, batch_id
               FROM raw_messages WHERE raw_id = %s""",
            (raw_id,),
        )


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
    _reject_first_element(clean_db, raw_id)
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


def test_a_message_of_one_element_has_no_row_yet_two_outcomes_of_it_are_named(clean_db: str) -> None:
    array_id = _land_and_decode(clean_db, reading=True)
    with psycopg.connect(clean_db) as conn:
        (reading_id,) = conn.execute("SELECT raw_id FROM measurements").fetchone()
        assert conn.execute("SELECT raw_id, elements FROM raw_elements").fetchall() == [(array_id, 3)]
    rec = _reconcile(clean_db)
    assert (rec.raw, rec.elements, rec.facts, rec.rejections, rec.unaccounted) == (2, 4, 3, 1, 0)

    # the reading both stored and rejected: two outcomes of its one element
    _reject_first_element(clean_db, reading_id)
    rec = _reconcile(clean_db)
    assert (rec.unaccounted, rec.unaccounted_sample) == (1, [reading_id])

    # landed before one element was implied, a message without a row may have been decoded before elements
    # were counted: it needs only some outcome
    with psycopg.connect(clean_db) as conn:
        conn.execute(
            """UPDATE batches SET started_at = (SELECT since FROM one_element_implied) - interval '1 second'
               WHERE batch_id = (SELECT batch_id FROM raw_messages WHERE raw_id = %s)""",
            (reading_id,),
        )
    assert _reconcile(clean_db).unaccounted == 0
    with psycopg.connect(clean_db) as conn:
        conn.execute("UPDATE batches SET started_at = now()")
        conn.execute("DELETE FROM rejected WHERE raw_id = %s", (reading_id,))

    # a row an earlier decoder wrote (two elements where there is one) is unaccounted, and replaced by the
    # window's next decoding
    with psycopg.connect(clean_db) as conn:
        conn.execute(
            """INSERT INTO raw_elements (raw_id, elements, arrived_at, batch_id)
               SELECT raw_id, 2, arrived_at, 0 FROM raw_messages WHERE raw_id = %s""",
            (reading_id,),
        )
    assert _reconcile(clean_db).unaccounted == 1
    _land_and_decode(clean_db, reading=True)
    with psycopg.connect(clean_db) as conn:
        assert conn.execute("SELECT raw_id, elements FROM raw_elements").fetchall() == [(array_id, 3)]
    assert _reconcile(clean_db).unaccounted == 0
