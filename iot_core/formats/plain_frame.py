"""Plain metrics decoded as polars expressions over a whole batch, for the forms devices send most.

The per-message decoder (`plain.decode_plain`) is the definition; this module is a shortcut that must
give exactly its result. It therefore only decides the messages whose every byte it can vouch for with
a narrow grammar, and hands every other message back to the per-message path (which also produces every
rejection). What it decides:

- topic `devices/<device>/<metric>`, no NUL, each segment within the field limit;
- payload valid UTF-8 (`columns.candidates`), small, surrounded only by ASCII whitespace, and one of:
  a decimal numeral of at most 15+15 ASCII digits, alone, followed by spaces and a unit of visible
  characters, or glued to a known unit; a boolean word; a word of ASCII letters, digits and `_.:-`
  (inner spaces allowed) that is not a boolean or a non-finite constant; or a flat JSON object holding
  only `value` (a short numeral, a string without escapes, `true`/`false`), optionally `unit` (such a
  string or null) and `ts` (`YYYY-MM-DDTHH:MM:SS[.fff|.ffffff]Z`, or null), each key once;
- a receive time between 2000 and 2106, where the per-message path's float arithmetic is exact.

Bounded digit counts keep every number finite and exactly as Python's `float` parses it; JSON integers go
through Int64 first so that `-0` becomes 0.0 as `json.loads` makes it.
"""

from __future__ import annotations

import polars as pl

from iot_core.formats.columns import POSITION, candidates, empty_rows
from iot_core.formats.guards import Limits
from iot_core.formats.values import _BOOLEANS, GLUED_UNITS, MAX_UNIT
from iot_core.rows import DECODED_MEASUREMENT, UTC_US

# Payloads above this size always take the per-message path (plain values are a few dozen bytes).
_MAX_FAST_BYTES = 1024
_TOPIC = r"^devices/[^/\x00]+/[^/\x00]+$"
_WS = r"[ \t\r\n]*"  # whitespace both Python's str.strip and JSON agree on
_NUMERAL = r"-?[0-9]{1,15}(?:\.[0-9]{1,15})?"
# A unit: visible characters only (no whitespace of any kind, no control character).
_UNIT_CHARS = r"[^\s\x00-\x1f\x7f-\x9f]"
_NUMBER_TEXT = rf"^{_WS}({_NUMERAL})( +)?({_UNIT_CHARS}{{1,{MAX_UNIT}}})?{_WS}$"
_WORD_TEXT = rf"^{_WS}([A-Za-z](?:[A-Za-z0-9_.:\- ]*[A-Za-z0-9_.:\-])?){_WS}$"
_NOT_WORDS = [*_BOOLEANS, "nan", "inf", "infinity"]

_JSON_WS = r"[ \t\r\n]*"
_JSON_NUMBER = r"-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,15})?"
_JSON_STRING = r'"[^"\\\x00-\x1f]*"'
_JSON_SCALAR = rf"{_JSON_NUMBER}|{_JSON_STRING}|true|false|null"
_JSON_MEMBER = rf'"(?:value|unit|ts)"{_JSON_WS}:{_JSON_WS}(?:{_JSON_SCALAR})'
_JSON_OBJECT = (
    rf"^{_WS}\{{{_JSON_WS}{_JSON_MEMBER}(?:{_JSON_WS},{_JSON_WS}{_JSON_MEMBER}){{0,2}}{_JSON_WS}\}}{_WS}$"
)
_JSON_TS = (
    r"^[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{3}|\.[0-9]{6})?Z$"
)


def _key(name: str) -> str:
    return rf'"{name}"{_JSON_WS}:'


def _member(name: str) -> pl.Expr:
    return pl.col("text").str.extract(rf"{_key(name)}{_JSON_WS}({_JSON_SCALAR})", 1)


def _is_string(expr: pl.Expr) -> pl.Expr:
    return expr.str.starts_with('"')


def _inner(expr: pl.Expr) -> pl.Expr:
    return expr.str.slice(1).str.strip_suffix('"')


def _to_float(numeral: pl.Expr) -> pl.Expr:
    """A JSON numeral as `json.loads` then `float` make it: integers exactly, via Int64."""
    return (
        pl.when(numeral.str.contains(".", literal=True))
        .then(numeral.cast(pl.Float64, strict=False))
        .otherwise(numeral.cast(pl.Int64, strict=False).cast(pl.Float64))
    )


def decode_plain_frame(
    raw: pl.DataFrame, limits: Limits, *, min_year: int, max_future_s: int, min_rows: int = 1
) -> pl.DataFrame:
    """`DECODED_MEASUREMENT` rows plus `POSITION` for the messages of `raw` (raw_id, topic, payload,
    rx_us) this path decides (none when it has fewer than `min_rows` candidates); every other position
    is left to the per-message decoder."""
    field = limits.max_field_chars
    max_bytes = min(limits.max_payload_bytes, _MAX_FAST_BYTES)
    selected = candidates(raw, ("devices/",), _TOPIC, max_bytes)
    if selected.height < max(min_rows, 1):
        return empty_rows(DECODED_MEASUREMENT)
    segments = pl.col("topic").str.split_exact("/", 2)
    frame = (
        selected.lazy()
        .with_columns(device_key=segments.struct.field("field_1"), metric=segments.struct.field("field_2"))
        .filter((pl.col("device_key").str.len_chars() <= field) & (pl.col("metric").str.len_chars() <= field))
    )
    number = pl.col("text").str.extract_groups(_NUMBER_TEXT)
    word = pl.col("text").str.extract(_WORD_TEXT, 1)
    frame = frame.with_columns(
        numeral=number.struct.field("1"),
        spaced=number.struct.field("2").is_not_null(),
        unit_text=number.struct.field("3"),
        word=word,
        is_json=pl.col("text").str.contains(_JSON_OBJECT),
    )
    frame = frame.with_columns(
        value=_member("value"), unit_json=_member("unit"), ts_json=_member("ts")
    ).with_columns(
        json_ok=pl.col("is_json")
        & (pl.col("text").str.count_matches(_key("value")) == 1)
        & (pl.col("text").str.count_matches(_key("unit")) <= 1)
        & (pl.col("text").str.count_matches(_key("ts")) <= 1)
    )

    lowered = pl.col("word").str.to_lowercase()
    unit_ok = (
        pl.col("unit_text").is_null()
        | (pl.col("spaced") & (pl.col("unit_text").str.len_chars() <= field))
        | (~pl.col("spaced") & pl.col("unit_text").is_in(sorted(GLUED_UNITS)))
    )
    text_number = pl.col("numeral").is_not_null() & unit_ok
    text_word = pl.col("word").is_not_null() & (pl.col("word").str.len_chars() <= field)
    text_boolean = text_word & lowered.is_in(list(_BOOLEANS))
    text_plain = text_word & ~lowered.is_in(_NOT_WORDS)

    value = pl.col("value")
    value_string = _is_string(value)
    value_inner = _inner(value)
    value_ok = (
        value.is_in(["true", "false"])
        | (value_string & (value_inner.str.len_chars() <= field) & value_inner.str.contains(r"[^\s]"))
        | (value.is_not_null() & ~value_string & (value != "null"))
    )
    unit_json = pl.col("unit_json")
    unit_json_ok = (
        unit_json.is_null()
        | (unit_json == "null")
        | (_is_string(unit_json) & (_inner(unit_json).str.len_chars() <= field))
    )
    ts_json = pl.col("ts_json")
    ts_text = _inner(ts_json)
    device_ts = (
        pl.when(_is_string(ts_json) & ts_text.str.contains(_JSON_TS))
        .then(ts_text.str.strptime(UTC_US, "%Y-%m-%dT%H:%M:%S%.fZ", strict=False))
        .otherwise(None)
    )
    ts_json_ok = ts_json.is_null() | (ts_json == "null") | device_ts.is_not_null()
    json_ok = pl.col("json_ok") & value_ok & unit_json_ok & ts_json_ok

    json_num = (
        pl.when(value == "true")
        .then(1.0)
        .when(value == "false")
        .then(0.0)
        .when(~value_string)
        .then(_to_float(value))
    )
    json_text = pl.when(value.is_in(["true", "false"])).then(value).when(value_string).then(value_inner)
    arrival = pl.from_epoch("rx_us", time_unit="us").dt.replace_time_zone("UTC")

    decided = (
        frame.with_columns(
            form=pl.when(json_ok)
            .then(pl.lit("json"))
            .when(text_number)
            .then(pl.lit("number"))
            .when(text_boolean)
            .then(pl.lit("boolean"))
            .when(text_plain)
            .then(pl.lit("text")),
            device_ts=device_ts,
            arrived_at=arrival,
        )
        .filter(pl.col("form").is_not_null())
        .with_columns(
            value_num=pl.when(pl.col("form") == "json")
            .then(json_num)
            .when(pl.col("form") == "number")
            .then(pl.col("numeral").cast(pl.Float64))
            .when(pl.col("form") == "boolean")
            .then(lowered.replace_strict(_BOOLEANS, default=None, return_dtype=pl.Float64)),
            value_text=pl.when(pl.col("form") == "json")
            .then(json_text)
            .when(pl.col("form") == "boolean")
            .then(lowered)
            .when(pl.col("form") == "text")
            .then(pl.col("word")),
            unit=pl.when(pl.col("form") == "json")
            .then(pl.when(_is_string(unit_json)).then(_inner(unit_json)).otherwise(pl.lit("")))
            .when(pl.col("form") == "number")
            .then(pl.col("unit_text").fill_null(""))
            .otherwise(pl.lit("")),
            ts=pl.when(
                pl.col("device_ts").is_not_null()
                & (pl.col("device_ts").dt.year() >= min_year)
                & (pl.col("device_ts") - pl.col("arrived_at") <= pl.duration(seconds=max_future_s))
            )
            .then(pl.col("device_ts"))
            .otherwise(pl.col("arrived_at")),
            item=pl.lit(0, pl.Int32),
            device_kind=pl.lit("plain"),
        )
        .select(POSITION, *DECODED_MEASUREMENT.columns)
        .collect()
    )
    return decided.cast(DECODED_MEASUREMENT.schema)  # type: ignore[arg-type]
