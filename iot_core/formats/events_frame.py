"""Events decoded column-wise for the forms devices send, exactly as `events.decode_event` decodes them.

What is decided here (any other message goes to the per-message path whole, with all its elements):

- topic `qs/v1/<device>/events`, the device segment within the field limit;
- payload valid UTF-8, at most `_MAX_FAST_BYTES`, a JSON object or a non-empty array of objects in the
  narrow grammar of `columns` (strings without escapes, numbers without exponent), whose members hold
  scalars, except `meta`, which may hold a flat object of such scalars;
- every element good: `schema` 1, `event_id`/`device_id`/`event_type` strings with a visible ASCII
  character within the limits, `device_id` equal to the topic's, `value` null, a boolean, a number or
  such a string, `unit` null or a string within the limit, `ts_device` null or a form `ts_columns`
  reads, `meta` null or an object whose keys are not the names of these fields, no field twice.

Strings hold no quote, so a string followed by `:` is a key, and with meta keys other than the field
names, every `"event_id":` of an element is its own member: fields are read from the whole element.
Each distinct meta object is checked and written by the per-message path's own functions.
"""

from __future__ import annotations

from datetime import tzinfo

import polars as pl

from iot_core.formats.columns import (
    COUNTS_SCHEMA,
    JSON_NUMBER,
    JSON_SCALAR,
    JSON_STRING,
    JSON_WS,
    POSITION,
    arrival,
    candidates,
    empty_rows,
    inner,
    is_string,
    member,
    to_float,
    visible,
)
from iot_core.formats.errors import DecodeError
from iot_core.formats.events import MAX_EVENT_ID
from iot_core.formats.guards import Limits, check_json, dump_json, parse_json
from iot_core.formats.ts_columns import device_ts
from iot_core.rows import DECODED_EVENT

# Larger payloads always take the per-message path (an event is a few hundred bytes).
_MAX_FAST_BYTES = 4096
_TOPIC = r"^qs/v1/[^/\x00]+/events$"
_WS = JSON_WS

_META_MEMBER = rf"{JSON_STRING}{_WS}:{_WS}(?:{JSON_STRING}|{JSON_NUMBER}|true|false|null)"
_META_OBJECT = rf"\{{{_WS}(?:{_META_MEMBER}(?:{_WS},{_WS}{_META_MEMBER})*)?{_WS}\}}"
_MEMBER = rf"(?:{member('meta')}{_META_OBJECT}|{JSON_STRING}{_WS}:{_WS}(?:{JSON_SCALAR}))"
_OBJECT = rf"\{{{_WS}{_MEMBER}(?:{_WS},{_WS}{_MEMBER})*{_WS}\}}"
_PAYLOAD = rf"^{_WS}(?:{_OBJECT}|\[{_WS}{_OBJECT}(?:{_WS},{_WS}{_OBJECT})*{_WS}\]){_WS}$"
_META = rf"{member('meta')}({_META_OBJECT})"

_FIELDS = ("schema", "event_id", "device_id", "event_type", "value", "unit", "ts_device", "meta")
# A field named twice (or a meta key named as a field: left to the per-message path all the same).
_DUPLICATE = "|".join(rf"{member(name)}[\s\S]*{member(name)}" for name in _FIELDS)


def _field(name: str) -> pl.Expr:
    """The scalar text of a member (null when it is absent or holds an object)."""
    return pl.col("element").str.extract(rf"{member(name)}({JSON_SCALAR})", 1).alias(f"f_{name}")


def _text_field(expr: pl.Expr, max_chars: int) -> pl.Expr:
    """A string that `_required_str` (or `json_scalar`) and `check_field` accept."""
    return is_string(expr) & visible(inner(expr)) & (inner(expr).str.len_chars() <= max_chars)


def _absent(expr: pl.Expr) -> pl.Expr:
    """Missing or JSON null: `obj.get(name)` is None."""
    return expr.is_null() | (expr == "null")


def _meta_json(text: str, max_bytes: int) -> str | None:
    """What `decode_event` stores for the meta object `text`; None where it would reject it, or where a
    key is a field name (which this path cannot tell from the field)."""
    try:
        meta = parse_json(text, "meta")
        if not isinstance(meta, dict) or not meta.keys().isdisjoint(_FIELDS):
            return None
        check_json(meta, "meta")
        return dump_json(meta, "meta", max_bytes)
    except DecodeError:
        return None


def _metas(objects: pl.Series, max_bytes: int) -> pl.Series:
    distinct = objects.drop_nulls().unique()
    table = pl.DataFrame(
        {"object": distinct, "json": [_meta_json(text, max_bytes) for text in distinct.to_list()]},
        schema={"object": pl.String, "json": pl.String},
    )
    joined = pl.DataFrame({"object": objects}).join(table, on="object", how="left", maintain_order="left")
    return joined["json"]


def _elements(messages: pl.DataFrame) -> pl.LazyFrame:
    """One row per element: an object is the message's text, an array is split into its objects."""
    frame = messages.lazy().select(
        POSITION,
        "raw_id",
        "rx_us",
        "text",
        "device_key",
        array=pl.col("text").str.strip_chars_start(" \t\r\n").str.starts_with("["),
    )
    objects = frame.filter(~pl.col("array")).with_columns(element="text", item=pl.lit(0, pl.Int32))
    arrays = (
        frame.filter(pl.col("array"))
        .with_columns(element=pl.col("text").str.extract_all(_OBJECT))
        .with_columns(item=pl.int_ranges(0, pl.col("element").list.len(), dtype=pl.Int32))
        .explode("element", "item")
    )
    return pl.concat([objects, arrays]).drop("text", "array")


def decode_events_frame(
    raw: pl.DataFrame,
    limits: Limits,
    default_tz: tzinfo,
    *,
    min_year: int,
    max_future_s: int,
    min_rows: int = 1,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(`DECODED_EVENT` rows plus `POSITION`; POSITION, raw_id and `elements` of each decided message)
    for the event messages of `raw` (raw_id, topic, payload, rx_us) this path decides (none when it has
    fewer than `min_rows` candidates)."""
    field = limits.max_field_chars
    max_bytes = min(limits.max_payload_bytes, _MAX_FAST_BYTES)
    selected = candidates(raw, ("qs/v1/",), _TOPIC, max_bytes)
    if selected.height < max(min_rows, 1):
        return empty_rows(DECODED_EVENT), pl.DataFrame(schema=COUNTS_SCHEMA)
    messages = selected.with_columns(
        device_key=pl.col("topic").str.split_exact("/", 3).struct.field("field_2")
    ).filter((pl.col("device_key").str.len_chars() <= field) & pl.col("text").str.contains(_PAYLOAD))
    elements = (
        _elements(messages)
        .with_columns(
            *[_field(name) for name in _FIELDS],
            duplicate=pl.col("element").str.contains(_DUPLICATE),
            meta_object=pl.col("element").str.extract(_META, 1),
            arrived_at=arrival(),
        )
        .with_columns(ts_text=pl.when(is_string(pl.col("f_ts_device"))).then(inner(pl.col("f_ts_device"))))
        .collect()
    )
    ts = device_ts(
        elements["ts_text"], elements["arrived_at"], default_tz, min_year=min_year, max_future_s=max_future_s
    )
    metas = _metas(elements["meta_object"], limits.max_meta_bytes)
    meta = (
        pl.when(pl.col("meta_object").is_not_null())
        .then("meta")
        .when(_absent(pl.col("f_meta")))
        .then(pl.lit("{}"))
    )
    elements = elements.with_columns(ts_device=ts, meta=metas).with_columns(meta=meta)
    value, unit, ts_raw = pl.col("f_value"), pl.col("f_unit"), pl.col("f_ts_device")
    good = (
        ~pl.col("duplicate")
        & (pl.col("f_schema") == "1")
        & _text_field(pl.col("f_event_id"), min(field, MAX_EVENT_ID))
        & _text_field(pl.col("f_device_id"), field)
        & (inner(pl.col("f_device_id")) == pl.col("device_key"))
        & _text_field(pl.col("f_event_type"), field)
        & (_absent(value) | value.is_in(["true", "false"]) | ~is_string(value) | _text_field(value, field))
        & (_absent(unit) | (is_string(unit) & (inner(unit).str.len_chars() <= field)))
        & (_absent(ts_raw) | pl.col("ts_device").is_not_null())
        & pl.col("meta").is_not_null()
    )
    decided = elements.filter(good.fill_null(False).all().over(POSITION))
    counts = decided.group_by(POSITION).agg(pl.col("raw_id").first(), elements=pl.len().cast(pl.Int32))
    return _events(decided), counts


def _events(decided: pl.DataFrame) -> pl.DataFrame:
    value, unit = pl.col("f_value"), pl.col("f_unit")
    boolean = value.is_in(["true", "false"])
    number = ~_absent(value) & ~is_string(value) & ~boolean
    return (
        decided.select(
            POSITION,
            "raw_id",
            "item",
            "device_key",
            event_id=inner(pl.col("f_event_id")),
            schema=pl.lit(1, pl.Int32),
            event_type=inner(pl.col("f_event_type")),
            value_num=pl.when(value == "true")
            .then(1.0)
            .when(value == "false")
            .then(0.0)
            .when(number)
            .then(to_float(value)),
            value_text=pl.when(boolean).then(value).when(is_string(value)).then(inner(value)),
            unit=pl.when(is_string(unit)).then(inner(unit)),
            ts_device="ts_device",
            ts_server="arrived_at",
            meta="meta",
        )
        .cast({POSITION: pl.UInt32, **DECODED_EVENT.schema})  # type: ignore[arg-type]
        .sort(POSITION, "item")
    )
