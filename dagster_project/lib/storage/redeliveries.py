"""Messages the broker sent again: the copy of a message whose first copy is archived already.

MQTT at least once: after a broker restart or a listener reconnect, the broker sends again (with the DUP
flag) what the listener had not acknowledged, and the listener may have written the first copy already. A
reading that carries its own time is stored once anyway (its key is the device, metric and time), but a
plain reading without one takes its arrival time, so its copy would be a second row. A copy is a message
marked `redelivered` whose topic and payload an earlier archived message of the same stream has, arrived
at most the horizon before it; it is rejected as a duplicate of that message. Only marked messages are
looked up, each against its horizon: nothing is read for a page without one.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import psycopg

from iot_core.rows import REJECTION

REASON = "duplicate_redelivery"


def redelivered_copies(conn: psycopg.Connection, page: pl.DataFrame, horizon: timedelta) -> pl.DataFrame:
    """(raw_id, first_raw_id) of the page's redelivered messages whose earlier copy is archived."""
    marked = page.filter(pl.col("redelivered"))["raw_id"].to_list() if horizon > timedelta(0) else []
    if not marked:
        return pl.DataFrame(schema={"raw_id": pl.Int64, "first_raw_id": pl.Int64})
    rows = conn.execute(
        """SELECT c.raw_id,
                  (SELECT r.raw_id FROM raw_messages r
                   WHERE r.arrived_at >= c.arrived_at - %(h)s AND r.arrived_at <= c.arrived_at
                     AND r.stream = c.stream AND (r.entry_ms, r.entry_seq) < (c.entry_ms, c.entry_seq)
                     AND r.topic = c.topic AND r.payload = c.payload
                   ORDER BY r.entry_ms, r.entry_seq LIMIT 1)
           FROM raw_messages c
           WHERE c.raw_id = ANY(%(ids)s) AND c.arrived_at >= %(lo)s AND c.arrived_at <= %(hi)s""",
        {"h": horizon, "ids": marked, "lo": page["arrived_at"].min(), "hi": page["arrived_at"].max()},
    ).fetchall()
    return pl.DataFrame(
        [(raw_id, first) for raw_id, first in rows if first is not None],
        schema={"raw_id": pl.Int64, "first_raw_id": pl.Int64},
        orient="row",
    )


def copy_rejections(copies: pl.DataFrame) -> pl.DataFrame:
    """One duplicate rejection per copy (item 0: the message as a whole)."""
    return REJECTION.frame(
        [
            (raw_id, 0, "duplicate", REASON, f"the broker sent raw message {first} again", "", None)
            for raw_id, first in copies.iter_rows()
        ],
        orient="row",
    )
