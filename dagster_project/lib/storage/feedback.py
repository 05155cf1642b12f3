"""Which ACKs and dead letters have been sent, so that a re-run sends only what is owed."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg


def feedback_sent(
    conn: psycopg.Connection, keys: Sequence[tuple[int, int, str]]
) -> set[tuple[int, int, str]]:
    """Which of these (raw_id, item, kind) have been sent to devices already."""
    if not keys:
        return set()
    raw_ids, items, kinds = (list(column) for column in zip(*keys, strict=True))
    rows = conn.execute(
        """SELECT f.raw_id, f.item, f.kind FROM feedback_sent f
           JOIN unnest(%s::bigint[], %s::integer[], %s::text[]) AS k (raw_id, item, kind)
             USING (raw_id, item, kind)""",
        (raw_ids, items, kinds),
    ).fetchall()
    return {(int(r), int(i), str(k)) for r, i, k in rows}


def record_feedback_sent(
    conn: psycopg.Connection, sent: Sequence[tuple[int, int, str, str]], run_id: str
) -> None:
    """Remember (raw_id, item, kind, status) as sent by `run_id`."""
    if not sent:
        return
    raw_ids, items, kinds, statuses = (list(column) for column in zip(*sent, strict=True))
    conn.execute(
        """INSERT INTO feedback_sent (raw_id, item, kind, status, run_id)
           SELECT raw_id, item, kind, status, %s
           FROM unnest(%s::bigint[], %s::integer[], %s::text[], %s::text[]) AS s (raw_id, item, kind, status)
           ON CONFLICT (raw_id, item, kind) DO UPDATE
           SET status = excluded.status, run_id = excluded.run_id, sent_at = now()""",
        (run_id, raw_ids, items, kinds, statuses),
    )
