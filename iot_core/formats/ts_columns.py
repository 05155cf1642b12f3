"""Device timestamps column-wise, exactly as `timestamps.parse_device_ts` and `is_sane` take them.

Read here: `YYYY-MM-DD[T ]HH:MM:SS[.fff|.ffffff]` followed by `Z`/`z`, a `±HH:MM` offset, or nothing
(then the configured zone applies). Anything else (other ISO-8601 forms, surrounding spaces, impossible
dates, a leap second, an instant outside years 1..9999 in UTC) comes out null: the per-message path
decides those.

A naive time in a fixed-offset zone (`datetime.timezone`) moves by that offset. In a `ZoneInfo` zone its
offset is looked up once per distinct local second (zoneinfo resolves offsets from whole local seconds;
TZif transitions fall on whole seconds); any other `tzinfo` is asked once per distinct local time.
"""

from __future__ import annotations

from datetime import timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import polars as pl

from iot_core.rows import UTC_US

_TS = (
    r"^[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{3}|\.[0-9]{6})?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?$"
)
# The length of a text matching _TS says its form: fraction digits, and a `Z` (1) or offset (6) after it.
_NAIVE = (19, 23, 26)
_ZULU = (20, 24, 27)
_OFFSET = (25, 29, 32)
_US = 1_000_000
# `(ts - arrival).total_seconds() <= max_future_s` is `ts - arrival <= max_future_s s` in whole µs
# while a µs is more than half a float step at max_future_s, which holds below 2^34 s.
_MAX_EXACT_FUTURE_S = 2**33


def _naive_offsets_us(naive: pl.Series, default_tz: tzinfo) -> pl.Series:
    """µs to subtract from each naive local time to reach UTC (null where Python would fail)."""
    if isinstance(default_tz, timezone):
        offset = default_tz.utcoffset(None)
        return pl.Series(naive.name, [offset // timedelta(microseconds=1)] * len(naive), pl.Int64)
    keys = naive.dt.truncate("1s") if isinstance(default_tz, ZoneInfo) else naive
    distinct = keys.drop_nulls().unique()
    offsets: list[int | None] = []
    for local in distinct.to_list():
        try:
            offset = local.replace(tzinfo=default_tz).utcoffset()
        except (OverflowError, ValueError):
            offset = None
        offsets.append(None if offset is None else offset // timedelta(microseconds=1))
    table = pl.DataFrame({"key": distinct, "offset": pl.Series(offsets, dtype=pl.Int64)})
    looked_up = pl.DataFrame({"key": keys}).join(table, on="key", how="left", maintain_order="left")
    return looked_up["offset"]


def device_ts(
    text: pl.Series, arrival: pl.Series, default_tz: tzinfo, *, min_year: int, max_future_s: int
) -> pl.Series:
    """What the per-message decoder stores for each device time `text`: the time in UTC when sane, else
    `arrival`. Null where `text` is null or not a form read here (or the sanity limit is not exact)."""
    if len(text) == 0 or abs(max_future_s) >= _MAX_EXACT_FUTURE_S:
        return pl.Series(text.name, [None] * len(text), UTC_US)
    size = pl.col("text").str.len_bytes()
    fraction = (
        pl.when(size.is_in([23, 24, 29]))
        .then(pl.col("text").str.slice(20, 3).cast(pl.Int64) * 1000)
        .when(size.is_in([26, 27, 32]))
        .then(pl.col("text").str.slice(20, 6).cast(pl.Int64))
        .otherwise(0)
    )
    offset = pl.col("text").str.slice(-6)
    written = (
        pl.when(size.is_in(_ZULU))
        .then(pl.lit(0, pl.Int64))
        .when(size.is_in(_OFFSET))
        .then(
            pl.when(offset.str.starts_with("-")).then(-1).otherwise(1)
            * (offset.str.slice(1, 2).cast(pl.Int64) * 3600 + offset.str.slice(4, 2).cast(pl.Int64) * 60)
            * _US
        )
    )
    seconds = (pl.col("text").str.slice(0, 10) + " " + pl.col("text").str.slice(11, 8)).str.strptime(
        pl.Datetime("us"), "%Y-%m-%d %H:%M:%S", strict=False
    )
    parts = (
        pl.DataFrame({"text": text, "arrival": arrival})
        .with_columns(text=pl.when(pl.col("text").str.contains(_TS)).then("text"))
        .with_columns(
            naive=seconds + pl.duration(microseconds=fraction), written=written, is_naive=size.is_in(_NAIVE)
        )
    )
    local = parts.select(pl.when("is_naive").then("naive"))["naive"]
    parts = parts.with_columns(zone=_naive_offsets_us(local, default_tz))
    utc = parts.select(
        utc=(pl.col("naive") - pl.duration(microseconds=pl.coalesce("written", "zone"))),
        arrival=pl.col("arrival"),
    ).with_columns(utc=pl.when(pl.col("utc").dt.year().is_between(1, 9999)).then(pl.col("utc")))
    utc = utc.with_columns(utc=pl.col("utc").dt.replace_time_zone("UTC"))
    sane = (pl.col("utc").dt.year() >= min_year) & (
        pl.col("utc") - pl.col("arrival") <= pl.duration(microseconds=max_future_s * _US)
    )
    chosen = pl.when(pl.col("utc").is_null()).then(None).when(sane).then("utc").otherwise("arrival")
    return utc.select(chosen.cast(UTC_US).alias(text.name)).to_series()
