"""A window decoded page by page ends exactly as decoded whole: same facts, same rejections (redeliveries
whose first copy is on an earlier page included), reconciled, and idempotent when run again."""

from __future__ import annotations

import json
import uuid

import polars as pl
import psycopg
import pytest

from dagster_project.lib.batch import (
    Decoded,
    OwedFeedback,
    decode_window,
    land_window,
    mark_feedback_sent,
    window_batch,
)
from dagster_project.lib.feedback import FEEDBACK, FeedbackTopics
from dagster_project.lib.raw_entries import raw_row
from dagster_project.lib.storage.batches import BatchInfo
from dagster_project.lib.storage.quality import reconcile
from dagster_project.lib.storage.raw_archive import PAGE_GROWTH, load_raw, load_raw_pages
from dagster_project.lib.windows import Window
from iot_core.formats.batch import DecodeOptions

pytestmark = pytest.mark.services

TOPICS = FeedbackTopics("qs/v1/{device_id}/acks", "qs/v1/deadletter")
BASE_MS = 1_690_000_000_000  # 2023-07-22: far from what other tests land


def _info(window: Window, streams: list[str]) -> BatchInfo:
    return window_batch(f"paged-{uuid.uuid4().hex}", "paged", window, streams)


def _messages(device: str) -> list[tuple[bytes, bytes]]:
    """Readings, a repeated reading (a redelivery) several messages later, events with a repeated
    event_id, bad input, and a topic and payload that CSV must quote."""
    reading = json.dumps({"value": 21.5, "ts": "2023-07-22T00:00:01Z"}).encode()
    event = {
        "schema": 1,
        "event_id": "e-1",
        "device_id": f"{device}-ev",
        "event_type": "door",
        "value": "open",
    }
    return [
        (f"devices/{device}/temperature".encode(), reading),
        (f"devices/{device}/humidity".encode(), b"40"),
        (f"qs/v1/{device}-ev/events".encode(), json.dumps([event, {**event, "event_id": "e-2"}]).encode()),
        (f"devices/{device}/a,b".encode(), b'"quoted", and\nnew line'),
        (b"", b""),
        (f"devices/{device}/temperature".encode(), reading),  # redelivery of the first message
        (f"qs/v1/{device}-ev/events".encode(), json.dumps(event).encode()),  # redelivered event
        (f"devices/{device}/pressure".encode(), b"not a number"),
        (b"\xff\xfe", b"\x00\x01binary"),
    ]


def _land(conn: psycopg.Connection, start_ms: int, device: str) -> tuple[Window, BatchInfo]:
    """The messages in two streams whose entry ids coincide, so arrival order ties across streams."""
    window = Window(start_ms, start_ms + 10_000)
    streams = ["paged:a", "paged:b"]
    rows = [
        raw_row(
            stream,
            f"{start_ms + i // 2}-0",
            {b"topic": t, b"payload": p, b"rx_us": b"%d" % (start_ms * 1000)},
        )
        for i, (t, p) in enumerate(_messages(device) * 2)
        for stream in streams[i % 2 : i % 2 + 1]
    ]
    info = _info(window, streams)
    land_window(conn, info, [rows[:5], rows[5:]])
    return window, info


def _outcome(conn: psycopg.Connection, window: Window, decoded: Decoded) -> dict[str, object]:
    bounds = window.utc_bounds
    reasons = conn.execute(
        """SELECT reason, count(*) FROM rejected WHERE arrived_at >= %s AND arrived_at < %s
           GROUP BY 1 ORDER BY 1""",
        bounds,
    ).fetchall()
    rec = reconcile(conn, *bounds)
    return {
        "raw": decoded.raw,
        "measurements": decoded.measurements,
        "events": decoded.events,
        "duplicates": decoded.duplicates,
        "rejected": decoded.rejected_count,
        "reasons": reasons,
        "unaccounted": rec.unaccounted,
        "balanced": rec.elements == rec.facts + rec.rejections,
    }


def _facts(conn: psycopg.Connection, window: Window) -> tuple:
    """Fact rows of the window and the newest batch that wrote one (a no-op re-run changes neither)."""
    row = conn.execute(
        """SELECT (SELECT count(*) FROM measurements WHERE arrived_at >= %(s)s AND arrived_at < %(e)s),
                  (SELECT count(*) FROM events WHERE ts_server >= %(s)s AND ts_server < %(e)s),
                  (SELECT max(batch_id) FROM measurements
                   WHERE arrived_at >= %(s)s AND arrived_at < %(e)s)""",
        dict(zip("se", window.utc_bounds, strict=True)),
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_pages_of_raw_messages_are_the_window_in_order(clean_db: str) -> None:
    with psycopg.connect(clean_db) as conn:
        window, _ = _land(conn, BASE_MS, "pages")
        whole = load_raw(conn, *window.utc_bounds)
        for page in (1, 2, 5, 17, 18, 1000):
            pages = list(load_raw_pages(conn, *window.utc_bounds, page=page))
            assert all(p.height <= page for p in pages)
            assert pl.concat(pages).equals(whole), page
    assert whole.height == 18
    assert whole["topic"].to_list().count("") == 2
    assert b'"quoted", and\nnew line' in whole["payload"].to_list()


def test_a_window_decoded_in_pages_ends_as_decoded_whole_and_reruns_idempotently(clean_db: str) -> None:
    outcomes = {}
    with psycopg.connect(clean_db) as conn, psycopg.connect(clean_db, autocommit=True) as other:
        # whole, pages of 4 and of 1, and pages of 4 read ahead on a second connection (as the asset does)
        for n, (page_rows, reader) in enumerate(((None, None), (4, None), (1, None), (4, other))):
            window, info = _land(conn, BASE_MS + (n + 1) * 60_000, f"paged-{n}")
            conn.commit()
            decoded = decode_window(conn, info, window, DecodeOptions(), TOPICS, page_rows, reader)
            conn.commit()
            key = (page_rows, reader is not None)
            outcomes[key] = _outcome(conn, window, decoded)
            facts = _facts(conn, window)
            again = decode_window(conn, _info(window, []), window, DecodeOptions(), TOPICS, page_rows, reader)
            conn.commit()
            rerun = _outcome(conn, window, again)
            assert rerun["unaccounted"] == 0 and rerun["reasons"] == outcomes[key]["reasons"]
            assert again.measurements == decoded.measurements and again.duplicates == decoded.duplicates
            assert _facts(conn, window) == facts, "a re-run wrote measurements again"
    whole = outcomes[(None, False)]
    assert whole["unaccounted"] == 0 and whole["balanced"]
    assert whole["duplicates"] > 0 and whole["events"] > 0 and whole["measurements"] > 0
    assert outcomes[(4, False)] == whole
    assert outcomes[(1, False)] == whole
    assert outcomes[(4, True)] == whole


def test_a_re_decoding_replaces_the_rejections_earlier_batches_wrote_in_its_pages_and_no_others(
    clean_db: str,
) -> None:
    """A rejection an earlier decoder wrote for a message that now decodes is gone after the window's next
    decoding (pages of three: each shares its boundary arrival time with the next, as two streams' entries
    arrive in pairs); one outside the window stays."""
    with psycopg.connect(clean_db) as conn:
        window, info = _land(conn, BASE_MS + 20 * 60_000, "stale")
        outside, outside_info = _land(conn, BASE_MS + 21 * 60_000, "kept")
        conn.commit()
        first = decode_window(conn, info, window, DecodeOptions(), TOPICS, 3)
        decode_window(conn, outside_info, outside, DecodeOptions(), TOPICS, 3)
        conn.commit()
        expected = _outcome(conn, window, first)
        stale = conn.execute(
            """INSERT INTO rejected (raw_id, item, stage, reason, topic, arrived_at, batch_id)
               SELECT raw_id, 7, 'decode', 'stale_decoder', topic, arrived_at, 0 FROM raw_messages
               WHERE arrived_at >= %s AND arrived_at < %s RETURNING raw_id""",
            window.utc_bounds,
        ).fetchall()
        kept = conn.execute(
            """INSERT INTO rejected (raw_id, item, stage, reason, topic, arrived_at, batch_id)
               SELECT raw_id, 7, 'decode', 'stale_decoder', topic, arrived_at, 0 FROM raw_messages
               WHERE arrived_at >= %s AND arrived_at < %s RETURNING raw_id""",
            outside.utc_bounds,
        ).fetchall()
        conn.commit()
        assert len(stale) == len(kept) == 18
        assert _outcome(conn, window, first)["unaccounted"] == 18
        again = decode_window(conn, _info(window, []), window, DecodeOptions(), TOPICS, 3)
        conn.commit()
        assert _outcome(conn, window, again) == expected
        left = conn.execute("SELECT count(*) FROM rejected WHERE reason = 'stale_decoder'").fetchone()
    assert left == (18,), "the rejections outside the re-decoded window stay"


def test_pages_commit_as_stored_and_a_window_failing_part_way_is_completed_by_its_rerun(
    clean_db: str,
) -> None:
    """Each page is committed once stored: a failure on a later page (here a fault the server raises,
    not a data error) leaves the earlier pages queryable and the batch unfinished; running the window
    again finishes it exactly as a window that never failed."""
    with psycopg.connect(clean_db) as conn:
        window, info = _land(conn, BASE_MS + 10 * 60_000, "partway")
        _fail_late_humidity(conn, "fail_late_humidity")
        conn.commit()
        with pytest.raises(psycopg.errors.InternalError, match="injected fault"):
            decode_window(conn, info, window, DecodeOptions(), TOPICS, 4)
        conn.rollback()
        stored_early = _facts(conn, window)
        unfinished = conn.execute(
            "SELECT finished_at IS NULL FROM batches WHERE run_id = %s", (info.run_id,)
        ).fetchone()
        assert stored_early[0] > 0, "the pages before the failing one were committed"
        assert unfinished == (True,), "the batch is not finished: the sensor heals the window"
        conn.execute("DROP TRIGGER fail_late_humidity ON measurements")
        conn.commit()
        again = decode_window(conn, _info(window, []), window, DecodeOptions(), TOPICS, 4)
        conn.commit()
        outcome = _outcome(conn, window, again)
    assert outcome["unaccounted"] == 0 and outcome["balanced"]
    assert again.raw == 18 and again.duplicates > 0
    assert _facts_count_is(clean_db, window, again.measurements)


def _fail_late_humidity(conn: psycopg.Connection, name: str) -> None:
    """A trigger `name` that makes the server refuse humidity readings after the window's first eight raw
    messages: a fault the server raises (not a data error) on a later page."""
    conn.execute(
        f"""CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF EXISTS (SELECT 1 FROM metrics WHERE metric_id = NEW.metric_id AND name = 'humidity')
                   AND NEW.raw_id > (SELECT min(raw_id) + 8 FROM raw_messages) THEN
                    RAISE EXCEPTION 'injected fault' USING ERRCODE = 'XX000';
                END IF;
                RETURN NEW;
            END $$;
            CREATE OR REPLACE TRIGGER {name} BEFORE INSERT ON measurements
            FOR EACH ROW EXECUTE FUNCTION {name}()"""
    )


def _facts_count_is(url: str, window: Window, measurements: int) -> bool:
    with psycopg.connect(url) as conn:
        return _facts(conn, window)[0] == measurements


def test_the_first_page_is_a_tenth_of_the_others_the_next_grow_and_the_pages_still_tile_the_window(
    clean_db: str,
) -> None:
    """Nothing overlaps reading the first page, so it is small (a tenth, at least 1,000 rows); each page
    after it is read while the one before is stored, so it grows by `PAGE_GROWTH` up to the page size."""
    start_ms = BASE_MS + 30 * 60_000
    window = Window(start_ms, start_ms + 30_000)
    rows = [
        raw_row(
            "first:page", f"{start_ms + i // 500}-{i % 500}", {b"topic": b"devices/fp/t", b"payload": b"1"}
        )
        for i in range(15_000)
    ]
    with psycopg.connect(clean_db) as conn:
        land_window(conn, _info(window, ["first:page"]), [rows])
        whole = load_raw(conn, *window.utc_bounds)
        sizes = {}
        for page in (20_000, 5000, 1000):
            pages = list(load_raw_pages(conn, *window.utc_bounds, page=page))
            assert pl.concat(pages).equals(whole), page
            sizes[page] = [p.height for p in pages]
    assert PAGE_GROWTH == 3 and whole.height == 15_000
    assert sizes[20_000] == [2000, 6000, 7000]
    assert sizes[5000] == [1000, 3000, 5000, 5000, 1000]
    assert sizes[1000] == [1000] * 15


def test_a_window_failing_part_way_owes_only_the_feedback_its_committed_pages_did_not_send(
    clean_db: str,
) -> None:
    """Each committed page's feedback is handed over as the page is committed; recorded as sent (what the
    run does with what the broker took before a failure), it is not owed again: the window's next run
    hands over the rest, and the two runs together answer every event element exactly once."""
    with psycopg.connect(clean_db) as conn:
        window, info = _land(conn, BASE_MS + 40 * 60_000, "fbpart")
        _fail_late_humidity(conn, "fail_late_humidity_fb")
        conn.commit()
        first = _CollectedSender()
        owed = OwedFeedback(conn, first, resend=False)
        with pytest.raises(psycopg.errors.InternalError, match="injected fault"):
            decode_window(conn, info, window, DecodeOptions(), TOPICS, 4, feedback_sink=owed.send)
        conn.rollback()
        assert first.sent.height > 0, "the committed pages' feedback was handed over"
        mark_feedback_sent(conn, owed.frame(), info.run_id)
        conn.execute("DROP TRIGGER fail_late_humidity_fb ON measurements")
        conn.execute("DROP FUNCTION fail_late_humidity_fb()")
        conn.commit()
        second = _CollectedSender()
        again = decode_window(
            conn,
            _info(window, []),
            window,
            DecodeOptions(),
            TOPICS,
            4,
            feedback_sink=OwedFeedback(conn, second, resend=False).send,
        )
        conn.commit()
    keys = ["raw_id", "item", "kind"]
    both = pl.concat([first.sent, second.sent]).select(keys)
    assert both.height == both.unique().height, "an element answered twice"
    assert both.sort(keys).equals(again.feedback.select(keys).sort(keys)), "an element not answered"


class _CollectedSender:
    """Stands in for `FeedbackSender`: keeps what it is handed."""

    def __init__(self) -> None:
        self.sent = pl.DataFrame(schema=FEEDBACK)

    def send(self, feedback: pl.DataFrame) -> None:
        self.sent = pl.concat([self.sent, feedback])
