"""Writing frames into tables: straight in by COPY when no key of theirs is held yet, else through a
temporary staging table that an upsert reads."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import psycopg

from dagster_project.lib.binary_copy import encode, split_binary
from iot_core.rows import Shape


def fresh_stage(cur: psycopg.Cursor, shape: Shape, table: str) -> None:
    """An empty temp table `table` of `shape`: one transaction may stage several pages through it."""
    cur.execute(shape.staging_ddl(table))
    cur.execute(f"TRUNCATE {table}")


def copy_frame(cur: psycopg.Cursor, table: str, frame: pl.DataFrame) -> None:
    """COPY `frame` into `table`: the rows whose columns are all of a fixed width in binary (see
    `binary_copy`), the rest as CSV that polars writes column-wise (no Python per row).

    In the CSV, strings are always quoted, so an empty string stays distinct from NULL (an unquoted empty
    field) and no line can read as the end-of-data marker; bytea goes as `\\x` hex; floats are written in
    their shortest round-trip form, timestamps as ISO-8601 with offset.
    """
    columns = ", ".join(frame.columns)
    binary, text = split_binary(frame)
    if binary.height:
        with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT binary)") as copy:
            copy.write(encode(binary))
    if not text.height:
        return
    hexed = [name for name, dtype in text.schema.items() if dtype == pl.Binary]
    if hexed:
        text = text.with_columns((pl.lit("\\x") + pl.col(c).bin.encode("hex")).alias(c) for c in hexed)
    data = text.write_csv(include_header=False, quote_style="non_numeric", null_value="")
    with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(data.encode())


def with_batch(shape: Shape, frame: pl.DataFrame, batch_id: int) -> pl.DataFrame:
    """`frame`'s rows as `shape` (which has `batch_id`), written by batch `batch_id`."""
    return shape.conform(frame.with_columns(pl.lit(batch_id).alias("batch_id")))


def written_if_new(conn: psycopg.Connection, write: Callable[[psycopg.Cursor], None]) -> bool:
    """Run `write` (a COPY straight into a table with a unique key) in a savepoint; False, with nothing
    written, if a row's key is held there already.

    New messages, the usual case, then cost one pass: no staging table and no insert from it. A re-run or a
    redelivery whose first copy is stored hits the key, and the caller upserts through a staging table
    instead. A concurrent writer of the same keys makes the COPY wait for it and then fail the same way.
    """
    try:
        with conn.transaction(), conn.cursor() as cur:
            write(cur)
    except psycopg.errors.UniqueViolation:
        return False
    return True
