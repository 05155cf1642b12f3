"""Pieces shared by the column-wise decoders (`plain_frame`, `events_frame`, `f2_frame`).

Each column-wise decoder is a shortcut for the per-message decoders, which stay the definition: it
decides only the messages whose every byte it can vouch for with a narrow grammar and leaves every
other message, and so every rejection, to the per-message path. The grammars here are JSON without
escapes and with bounded numbers, for which what `json.loads` makes of a text is plain to see.
"""

from __future__ import annotations

import polars as pl

from iot_core.rows import Shape

#: Row position in the batch, to merge the column-wise rows with the per-message path's in message order.
POSITION = "_position"

#: A format with fewer candidates in a page is left to the per-message path (the same result): a
#: column-wise path's fixed cost per page (planning its queries, compiling its regular expressions:
#: 5-10 ms) is what the per-message path takes for 200-400 messages.
COLUMN_WISE_MIN_ROWS = 400
#: What a column-wise path returns besides its rows: how many elements each decided message has.
COUNTS_SCHEMA = {POSITION: pl.UInt32, "raw_id": pl.Int64, "elements": pl.Int32}

# Receive times (µs) whose `datetime.fromtimestamp(rx_us / 1e6)` is exact: 2000-01-01 .. 2^32 s.
MIN_RX_US = 946_684_800_000_000
MAX_RX_US = 4_294_967_296_000_000

#: Whitespace both JSON and Python's `str.strip` skip.
JSON_WS = r"[ \t\r\n]*"
#: A JSON string without escapes or control characters: its text between the quotes is its value.
JSON_STRING = r'"[^"\\\x00-\x1f]*"'
#: A JSON number that `float` reads exactly as `json.loads` does (no exponent, at most 15+15 digits).
JSON_NUMBER = r"-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,15})?"
JSON_SCALAR = rf"{JSON_STRING}|{JSON_NUMBER}|true|false|null"


def member(name: str) -> str:
    """`"name":` with JSON whitespace around the colon."""
    return rf'"{name}"{JSON_WS}:{JSON_WS}'


def is_string(expr: pl.Expr) -> pl.Expr:
    return expr.str.starts_with('"')


def inner(expr: pl.Expr) -> pl.Expr:
    """The text between the quotes of a `JSON_STRING`."""
    return expr.str.slice(1).str.strip_suffix('"')


def visible(expr: pl.Expr) -> pl.Expr:
    """Holds a visible ASCII character, so `str.strip()` leaves something (others: per-message path)."""
    return expr.str.contains("[!-~]")


def to_float(numeral: pl.Expr) -> pl.Expr:
    """A `JSON_NUMBER` as `json.loads` then `float` make it: integers exactly, via Int64 (`-0` is 0.0)."""
    return (
        pl.when(numeral.str.contains(".", literal=True))
        .then(numeral.cast(pl.Float64, strict=False))
        .otherwise(numeral.cast(pl.Int64, strict=False).cast(pl.Float64))
    )


def arrival() -> pl.Expr:
    """`datetime.fromtimestamp(rx_us / 1e6, UTC)`, exact for receive times in [MIN_RX_US, MAX_RX_US)."""
    return pl.from_epoch("rx_us", time_unit="us").dt.replace_time_zone("UTC")


def empty_rows(shape: Shape) -> pl.DataFrame:
    """No rows of `shape`, with POSITION: what a column-wise path returns when it decides nothing."""
    return pl.DataFrame(schema={POSITION: pl.UInt32, **shape.schema})


def _utf8(payloads: pl.Series) -> pl.Series:
    """Which payloads are valid UTF-8 (what `bytes.decode("utf-8")` accepts): all of them when the
    whole column casts to text (the common case, checked at memory speed), else one by one."""
    try:
        payloads.cast(pl.String)
    except pl.exceptions.PolarsError:
        pass
    else:
        return pl.Series([True] * len(payloads), dtype=pl.Boolean)
    return pl.Series([_valid_utf8(payload) for payload in payloads.to_list()], dtype=pl.Boolean)


def _valid_utf8(payload: bytes) -> bool:
    if payload.isascii():
        return True
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def candidates(raw: pl.DataFrame, prefixes: tuple[str, ...], topic: str, max_bytes: int) -> pl.DataFrame:
    """The messages of `raw` (raw_id, topic, payload, rx_us) a column-wise decoder may look at: topic
    matching the regular expression `topic`, payload valid UTF-8 of at most `max_bytes`, receive time in
    the exact range. Adds POSITION and `text` (the payload as a string)."""
    starts = pl.lit(False)
    for prefix in prefixes:
        starts = starts | pl.col("topic").str.starts_with(prefix)
    frame = (
        raw.lazy()
        .select("raw_id", "topic", "payload", "rx_us")
        .with_row_index(POSITION)
        .filter(
            starts.fill_null(False)
            & (pl.col("payload").bin.size() <= max_bytes).fill_null(False)
            & pl.col("rx_us").is_between(MIN_RX_US, MAX_RX_US, closed="left").fill_null(False)
        )
        .filter(pl.col("topic").str.contains(topic))
        .collect()
    )
    frame = frame.filter(_utf8(frame["payload"]))
    # Only now is every payload valid UTF-8, so the cast cannot fail.
    return frame.with_columns(text=pl.col("payload").cast(pl.String)).drop("payload")
