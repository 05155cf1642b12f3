"""pandera schemas of what may be stored; rows that fail become rejections with the failed checks named."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from iot_core.formats.batch import REJECT_SCHEMA

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$"
METRIC_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:%-]{0,127}$"


class MeasurementSchema(pa.DataFrameModel):
    raw_id: pl.Int64
    item: pl.Int32 = pa.Field(ge=0)
    device_key: str = pa.Field(str_matches=KEY_PATTERN)
    device_kind: str = pa.Field(isin=["plain", "event", "f2"])
    metric: str = pa.Field(str_matches=METRIC_PATTERN)
    unit: str = pa.Field(str_length={"max_value": 32})
    value_num: pl.Float64 = pa.Field(nullable=True)
    value_text: str = pa.Field(nullable=True, str_length={"max_value": 256})

    @pa.dataframe_check(error="value_num must be finite and one of value_num/value_text present")
    def value_present_and_finite(cls, data: pa.PolarsData) -> pl.LazyFrame:
        num, text = pl.col("value_num"), pl.col("value_text")
        return data.lazyframe.select(
            (num.is_not_null() | text.is_not_null()) & (num.is_null() | num.is_finite())
        )


class EventSchema(pa.DataFrameModel):
    raw_id: pl.Int64
    item: pl.Int32 = pa.Field(ge=0)
    device_key: str = pa.Field(str_matches=KEY_PATTERN)
    event_id: str = pa.Field(str_length={"min_value": 1, "max_value": 128})
    schema: pl.Int32 = pa.Field(eq=1)
    event_type: str = pa.Field(str_length={"min_value": 1, "max_value": 64})
    value_num: pl.Float64 = pa.Field(nullable=True)
    value_text: str = pa.Field(nullable=True, str_length={"max_value": 256})
    unit: str = pa.Field(nullable=True, str_length={"max_value": 32})

    @pa.dataframe_check(error="value_num must be finite")
    def value_finite(cls, data: pa.PolarsData) -> pl.LazyFrame:
        num = pl.col("value_num")
        return data.lazyframe.select(num.is_null() | num.is_finite())


def split_valid(frame: pl.DataFrame, schema: type[pa.DataFrameModel]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(valid rows, rejections of the invalid rows); a rejection lists every check its row failed."""
    if frame.is_empty():
        return frame, pl.DataFrame(schema=REJECT_SCHEMA)
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
        rejects = bad.select(
            pl.col("raw_id"),
            pl.col("item"),
            pl.lit("validate").alias("stage"),
            pl.lit("schema").alias("reason"),
            pl.col("what").alias("detail"),
            pl.lit("").alias("topic"),
        ).cast(REJECT_SCHEMA)
        return valid, rejects
    return frame, pl.DataFrame(schema=REJECT_SCHEMA)
