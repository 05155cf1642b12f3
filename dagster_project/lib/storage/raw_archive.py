"""The raw archive: stream entries landed untouched in `raw_messages`, and read back a page at a time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

import polars as pl
import psycopg

from dagster_project.lib.storage.staging import fresh_stage, written_if_new
from iot_core.rows import RAW_PAGE, STREAM_ENTRY

_STAGED_RAW = STREAM_ENTRY.plus("batch_id")


def land_raw(conn: psycopg.Connection, rows: Sequence[tuple], batch_id: int) -> int:
    """Insert stream entries (tuples in `STREAM_ENTRY` order) once; returns how many were new."""
    columns = _STAGED_RAW.column_list()

    # Rows arrive as Python tuples: per-row COPY is cheaper here than building a frame first (measured
    # with bench/run.py); binary spares the server parsing timestamps and hex (1.9 against 2.4 µs a row).
    def copy_rows(cur: psycopg.Cursor, table: str) -> None:
        with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT binary)") as copy:
            copy.set_types(list(_STAGED_RAW.sql_types().values()))
            for row in rows:
                copy.write_row((*row, batch_id))

    if written_if_new(conn, lambda cur: copy_rows(cur, "raw_messages")):
        return len(rows)
    with conn.cursor() as cur:
        fresh_stage(cur, _STAGED_RAW, "stage_raw")  # a window lands page by page in one transaction
        copy_rows(cur, "stage_raw")
        cur.execute(
            f"""INSERT INTO raw_messages ({columns}) SELECT {columns} FROM stage_raw
                ON CONFLICT (arrived_at, stream, entry_ms, entry_seq) DO NOTHING"""
        )
        return cur.rowcount


def load_raw(conn: psycopg.Connection, start: datetime, end: datetime) -> pl.DataFrame:
    """The archived messages that arrived in [start, end), in arrival order."""
    return pl.concat([RAW_PAGE.empty(), *load_raw_pages(conn, start, end, page=None)])


def load_raw_pages(
    conn: psycopg.Connection, start: datetime, end: datetime, page: int | None, stream: str | None = None
) -> Iterator[pl.DataFrame]:
    """The archived messages that arrived in [start, end) (of `stream` only, if given), in arrival order,
    `page` rows at a time (all at once with None), each page a `RAW_PAGE` frame.

    Read as CSV that polars parses (no Python object per row); pages follow the primary key, so each
    page is one index range scan however large the window is. The first page is a tenth of the others (at
    least 1,000 rows): nothing overlaps its reading (see `read_ahead`), and the window's first messages are
    stored the sooner. The pages after it grow by `PAGE_GROWTH` up to `page`, so that each is read in
    about the time the one before takes to decode and store, and no page waits for its reading.
    """
    after: tuple | None = None
    size = page if page is None else min(page, max(FIRST_PAGE_MIN_ROWS, page // 10))
    while True:
        frame, after = _raw_page(conn, start, end, after, size, stream)
        if frame.height:
            yield frame
        if after is None or size is None or frame.height < size:
            return
        size = min(page, size * PAGE_GROWTH)


_RAW_KEY = "arrived_at, stream, entry_ms, entry_seq"


FIRST_PAGE_MIN_ROWS = 1000


#: Each page after the first is this many times the one before, up to `page`: a page is read ahead while
#: the one before is decoded and stored, which takes about three times as long as reading it.
PAGE_GROWTH = 3


#: One line per raw message: integers, and hex for every text or bytes field (no quoting to get wrong).
_RAW_PAGE_LINE = """concat_ws(',', raw_id, encode(convert_to(topic, 'UTF8'), 'hex'),
                   encode(payload, 'hex'), rx_us, (extract(epoch FROM arrived_at) * 1000000)::bigint,
                   encode(convert_to(stream, 'UTF8'), 'hex'), entry_ms, entry_seq, redelivered::int)"""


_RAW_PAGE_SCHEMA = {
    "raw_id": pl.Int64,
    "topic": pl.String,
    "payload": pl.String,
    "rx_us": pl.Int64,
    "arrived_us": pl.Int64,
    "stream": pl.String,
    "entry_ms": pl.Int64,
    "entry_seq": pl.Int64,
    "redelivered": pl.Int8,
}


def _raw_page(
    conn: psycopg.Connection,
    start: datetime,
    end: datetime,
    after: tuple | None,
    page: int | None,
    stream: str | None = None,
) -> tuple[pl.DataFrame, tuple | None]:
    """One page of `load_raw_pages` and the key of its last row (to continue after).

    The server joins the page into one text value that polars parses: one value to transfer and no
    Python object per row (a COPY or a row fetch hands over each row on its own).
    """
    params: dict[str, object] = {"s": start, "e": end, "n": page, "stream": stream}
    resume = "" if stream is None else "AND stream = %(stream)s"
    if after is not None:
        resume += f" AND ({_RAW_KEY}) > (%(a)s, %(b)s, %(c)s, %(d)s)"
        params.update(zip("abcd", after, strict=True))
    row = conn.execute(
        f"""SELECT string_agg({_RAW_PAGE_LINE}, E'\\n' ORDER BY {_RAW_KEY}) FROM (
                SELECT * FROM raw_messages WHERE arrived_at >= %(s)s AND arrived_at < %(e)s {resume}
                ORDER BY {_RAW_KEY} {"LIMIT %(n)s" if page is not None else ""}) AS page""",
        params,
    ).fetchone()
    if row is None or row[0] is None:
        return RAW_PAGE.empty(), None
    lines = pl.read_csv(row[0].encode(), has_header=False, schema=_RAW_PAGE_SCHEMA, quote_char=None)
    # an empty field is read as null; every column is NOT NULL, so it is the empty text or bytes
    text = [pl.col(c).fill_null("").str.decode("hex").cast(pl.String) for c in ("topic", "stream")]
    lines = lines.with_columns(
        *text,
        pl.col("payload").fill_null("").str.decode("hex"),
        pl.col("arrived_us").cast(pl.Datetime("us", "UTC")).alias("arrived_at"),
        pl.col("redelivered").cast(pl.Boolean),
    )
    key = tuple(lines.select("arrived_at", "stream", "entry_ms", "entry_seq").row(-1))
    return RAW_PAGE.conform(lines), key
