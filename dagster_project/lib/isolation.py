"""A last line of defence: when the database refuses a batch's rows on their data, store the rest.

The decoder already rejects what PostgreSQL refuses; should a row still get through, the store step is
retried on halves inside savepoints until the refused rows are found, and those become rejections with
the database's own message. A window never fails because of its content.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import psycopg

from iot_core.rows import REJECTION

#: Errors about the data itself (bad encoding, out-of-range values, violated checks), not about the server.
DATA_ERRORS: tuple[type[psycopg.Error], ...] = (psycopg.DataError, psycopg.IntegrityError)

StoreStep = Callable[[psycopg.Connection, pl.DataFrame, int], tuple[int, pl.DataFrame]]


def store_isolating(
    conn: psycopg.Connection, frame: pl.DataFrame, batch_id: int, store: StoreStep
) -> tuple[int, pl.DataFrame]:
    """`store(conn, frame, batch_id)`, or, when the database refuses some rows on their data, the same for
    the rows it accepts; returns (rows stored, rejections: the step's own plus the refused rows')."""
    try:
        with conn.transaction():
            return store(conn, frame, batch_id)
    except DATA_ERRORS as exc:
        if frame.height <= 1:
            return 0, _refused(frame, exc)
    half = frame.height // 2
    stored_a, rejected_a = store_isolating(conn, frame.slice(0, half), batch_id, store)
    stored_b, rejected_b = store_isolating(conn, frame.slice(half), batch_id, store)
    return stored_a + stored_b, pl.concat([rejected_a, rejected_b])


def _refused(frame: pl.DataFrame, error: psycopg.Error) -> pl.DataFrame:
    message = (str(error).splitlines() or [type(error).__name__])[0][:500]
    event_id = frame["event_id"] if "event_id" in frame.columns else pl.Series([None] * frame.height)
    return REJECTION.conform(
        pl.DataFrame(
            {
                "raw_id": frame["raw_id"],
                "item": frame["item"],
                "stage": ["store"] * frame.height,
                "reason": ["database_refused"] * frame.height,
                "detail": [message] * frame.height,
                "topic": [""] * frame.height,
                "event_id": event_id,
            }
        )
    )
