"""pandera schemas of what may be stored; rows that fail become rejections with the failed checks named.

The schemas are built from the row shapes (`iot_core.rows`): every column of a shape is checked for its
type, and the rules below add what a column may hold.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from iot_core.rows import DECODED_EVENT, DECODED_MEASUREMENT, REJECTION, Shape

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$"
METRIC_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:%-]{0,127}$"
MAX_TEXT_VALUE = 256
MAX_UNIT = 32


def _finite_or_null(data: pa.PolarsData) -> pl.LazyFrame:
    num = pl.col("value_num")
    return data.lazyframe.select(num.is_null() | num.is_finite())


def _value_present(data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col("value_num").is_not_null() | pl.col("value_text").is_not_null())


def schema_for(
    shape: Shape,
    rules: dict[str, list[pa.Check]],
    nullable: set[str],
    frame_checks: list[pa.Check],
) -> pa.DataFrameSchema:
    """A schema with one typed column per column of `shape`, plus the given rules."""
    return pa.DataFrameSchema(
        {
            name: pa.Column(dtype, checks=rules.get(name, []), nullable=name in nullable)
            for name, dtype in shape.schema.items()
        },
        checks=frame_checks,
        name=shape.name,
    )


MEASUREMENT_SCHEMA = schema_for(
    DECODED_MEASUREMENT,
    {
        "item": [pa.Check.ge(0)],
        "device_key": [pa.Check.str_matches(KEY_PATTERN)],
        "device_kind": [pa.Check.isin(["plain", "event", "f2"])],
        "metric": [pa.Check.str_matches(METRIC_PATTERN)],
        "unit": [pa.Check.str_length(max_value=MAX_UNIT)],
        "value_text": [pa.Check.str_length(max_value=MAX_TEXT_VALUE)],
    },
    nullable={"value_num", "value_text"},
    frame_checks=[
        pa.Check(_value_present, error="one of value_num/value_text must be present"),
        pa.Check(_finite_or_null, error="value_num must be finite"),
    ],
)

EVENT_SCHEMA = schema_for(
    DECODED_EVENT,
    {
        "item": [pa.Check.ge(0)],
        "device_key": [pa.Check.str_matches(KEY_PATTERN)],
        "event_id": [pa.Check.str_length(min_value=1, max_value=128)],
        "schema": [pa.Check.eq(1)],
        "event_type": [pa.Check.str_length(min_value=1, max_value=64)],
        "value_text": [pa.Check.str_length(max_value=MAX_TEXT_VALUE)],
        "unit": [pa.Check.str_length(max_value=MAX_UNIT)],
    },
    nullable={"value_num", "value_text", "unit", "ts_device"},
    frame_checks=[pa.Check(_finite_or_null, error="value_num must be finite")],
)


def split_valid(frame: pl.DataFrame, schema: pa.DataFrameSchema) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(valid rows, rejections of the invalid rows); a rejection lists every check its row failed."""
    if frame.is_empty():
        return frame, REJECTION.empty()
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
        if "index" not in cases.columns or cases["index"].null_count() == cases.height:
            raise  # a schema-level failure (missing column, wrong type) is a bug, not bad input
        failed = (
            cases.filter(pl.col("index").is_not_null())
            .with_columns(
                what=pl.format(
                    "{} failed {} (got {})",
                    pl.col("column"),
                    pl.col("check"),
                    pl.col("failure_case").str.slice(0, 80),
                )
            )
            .group_by("index")
            .agg(pl.col("what").sort().str.join("; "))
            .rename({"index": "_row"})
            .with_columns(pl.col("_row").cast(pl.UInt32))
        )
        indexed = frame.with_row_index("_row")
        bad = indexed.join(failed, on="_row", how="inner")
        valid = indexed.join(failed, on="_row", how="anti").drop("_row")
        rejects = REJECTION.conform(
            bad.select(
                pl.col("raw_id"),
                pl.col("item"),
                pl.lit("validate").alias("stage"),
                pl.lit("schema").alias("reason"),
                pl.col("what").alias("detail"),
                pl.lit("").alias("topic"),
                (pl.col("event_id") if "event_id" in bad.columns else pl.lit(None)).alias("event_id"),
            )
        )
        return valid, rejects
    return frame, REJECTION.empty()
