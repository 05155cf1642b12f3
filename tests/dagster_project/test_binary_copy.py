"""Rows sent in PostgreSQL's binary COPY format read back exactly as the same rows sent as CSV: every
fixed-width type the tables use, extreme values, and the rows that must go as CSV (text, partial nulls)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import psycopg
import pytest

from dagster_project.lib.binary_copy import encode, split_binary
from dagster_project.lib.storage.staging import copy_frame

pytestmark = pytest.mark.services

DDL = """CREATE TEMP TABLE {name} (small smallint, whole integer, big bigint, real_ double precision,
                                   flag boolean, at timestamptz, label text)"""


def frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "small": [0, -32768, 32767, 7],
            "whole": [1, -(2**31), 2**31 - 1, 8],
            "big": [2, -(2**63), 2**63 - 1, 9],
            "real_": [0.1, -1e308, 5e-324, 2.5],
            "flag": [True, False, True, False],
            "at": [
                datetime(2026, 11, 30, 1, 2, 3, 456789, tzinfo=UTC),
                datetime(1970, 1, 1, tzinfo=UTC),
                datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                datetime(2000, 1, 1, tzinfo=UTC),
            ],
            "label": [None, None, None, "text goes as CSV"],
        },
        schema={
            "small": pl.Int16,
            "whole": pl.Int32,
            "big": pl.Int64,
            "real_": pl.Float64,
            "flag": pl.Boolean,
            "at": pl.Datetime("us", "UTC"),
            "label": pl.String,
        },
    )


def test_fixed_width_rows_go_binary_and_read_back_as_csv_rows_do(clean_db: str) -> None:
    rows = frame()
    binary, text = split_binary(rows)
    assert binary.height == 3 and text["label"].to_list() == ["text goes as CSV"]
    with psycopg.connect(clean_db) as conn, conn.cursor() as cur:
        cur.execute(DDL.format(name="via_binary"))
        cur.execute(DDL.format(name="via_csv"))
        with cur.copy(f"COPY via_binary ({', '.join(rows.columns)}) FROM STDIN (FORMAT binary)") as copy:
            copy.write(encode(binary))
        csv = binary.write_csv(include_header=False, quote_style="non_numeric", null_value="")
        with cur.copy(f"COPY via_csv ({', '.join(rows.columns)}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(csv.encode())
        ordered = "SELECT * FROM {} ORDER BY small"
        assert (
            cur.execute(ordered.format("via_binary")).fetchall()
            == cur.execute(ordered.format("via_csv")).fetchall()
        )
        got = cur.execute("SELECT big, at, real_ FROM via_binary WHERE small = 32767").fetchone()
        assert got == (2**63 - 1, datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), 5e-324)


def test_the_store_copy_sends_each_row_one_way_or_the_other_and_loses_none(clean_db: str) -> None:
    rows = pl.concat(
        [
            frame(),
            frame().with_columns(pl.lit(None, pl.Int32).alias("whole")),  # a partial null: CSV
        ]
    )
    with psycopg.connect(clean_db) as conn, conn.cursor() as cur:
        cur.execute(DDL.format(name="mixed"))
        copy_frame(cur, "mixed", rows)
        back = cur.execute("SELECT count(*), count(whole), count(label) FROM mixed").fetchone()
    assert back == (8, 4, 2)
