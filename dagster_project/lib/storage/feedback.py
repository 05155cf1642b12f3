"""Which ACKs and dead letters have been sent, so that a re-run sends only what is owed."""

from __future__ import annotations

import polars as pl
import psycopg

from dagster_project.lib.storage.staging import copy_frame, written_if_new

#: The key of a sent message: the element it answers and its kind.
SENT_KEY = {"raw_id": pl.Int64, "item": pl.Int32, "kind": pl.String}


def feedback_sent(conn: psycopg.Connection, lo: int, hi: int) -> pl.DataFrame:
    """The (raw_id, item, kind) sent to devices already for the raw messages `lo` to `hi` (raw ids).

    Read as a range of the key's index: a window's first run finds none there, which costs less than
    looking up each of its tens of thousands of keys."""
    rows = conn.execute(
        "SELECT raw_id, item, kind FROM feedback_sent WHERE raw_id BETWEEN %s AND %s", (lo, hi)
    ).fetchall()
    return pl.DataFrame(rows, schema=SENT_KEY, orient="row")


def record_feedback_sent(conn: psycopg.Connection, sent: pl.DataFrame, run_id: str) -> None:
    """Remember the rows of `sent` (raw_id, item, kind, status) as sent by `run_id`: copied straight in
    when none was recorded before (a window's first run), else upserted (a re-run that sends again)."""
    if sent.is_empty():
        return
    rows = sent.select("raw_id", "item", "kind", "status", run_id=pl.lit(run_id))
    if written_if_new(conn, lambda cur: copy_frame(cur, "feedback_sent", rows)):
        return
    conn.execute(
        """INSERT INTO feedback_sent (raw_id, item, kind, status, run_id)
           SELECT raw_id, item, kind, status, %s
           FROM unnest(%s::bigint[], %s::integer[], %s::text[], %s::text[]) AS s (raw_id, item, kind, status)
           ON CONFLICT (raw_id, item, kind) DO UPDATE
           SET status = excluded.status, run_id = excluded.run_id, sent_at = now()""",
        (run_id, *(sent[column].to_list() for column in ("raw_id", "item", "kind", "status"))),
    )
