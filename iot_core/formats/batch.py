"""Decode a batch of raw messages into measurement, event and rejection frames (polars).

Every raw row ends in at least one output row: one measurement per value it carries, one event per
element, or one rejection per message (or per bad element of an event array). Nothing is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

import polars as pl

from iot_core.formats.columns import COLUMN_WISE_MIN_ROWS, POSITION
from iot_core.formats.errors import DecodeError
from iot_core.formats.events import decode_event, split_events
from iot_core.formats.events_frame import decode_events_frame
from iot_core.formats.f2_frame import decode_f2_frame
from iot_core.formats.f2_messages import F2Catalog, F2Reading, decode_f2_doors, decode_f2_sensor
from iot_core.formats.guards import DEFAULT_LIMITS, Limits, check_payload_size, printable
from iot_core.formats.plain import decode_plain
from iot_core.formats.plain_frame import decode_plain_frame
from iot_core.formats.timestamps import is_sane
from iot_core.formats.topics import Topic, parse_topic
from iot_core.formats.version import DECODER_VERSION as DECODER_VERSION
from iot_core.rows import DECODED_EVENT, DECODED_MEASUREMENT, REJECTION, Shape

_KINDS = {"plain": "plain", "event": "event", "f2_sensor": "f2", "f2_doors": "f2"}


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    default_tz: tzinfo = UTC
    max_future_s: int = 300
    min_year: int = 2000
    max_payload_bytes: int = DEFAULT_LIMITS.max_payload_bytes
    max_field_chars: int = DEFAULT_LIMITS.max_field_chars
    max_meta_bytes: int = DEFAULT_LIMITS.max_meta_bytes

    @property
    def limits(self) -> Limits:
        return Limits(self.max_payload_bytes, self.max_field_chars, self.max_meta_bytes)


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    measurements: pl.DataFrame
    events: pl.DataFrame
    rejected: pl.DataFrame
    #: raw_id -> how many elements the message had (events of an array, readings; 1 if rejected whole):
    #: each must end as one fact row or one rejection
    elements: pl.DataFrame = field(default_factory=lambda: _elements_frame({}))


def _elements_frame(elements: dict[int, int]) -> pl.DataFrame:
    return pl.DataFrame(
        {"raw_id": list(elements), "elements": list(elements.values())},
        schema={"raw_id": pl.Int64, "elements": pl.Int32},
    )


class _Rows:
    """Column-wise accumulators: appending to lists is far cheaper than building dicts per row."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.columns: dict[str, list] = {name: [] for name in shape.columns}

    def add(self, *values: object) -> None:
        for column, value in zip(self.columns.values(), values, strict=True):
            column.append(value)

    def __len__(self) -> int:
        return len(self.columns[self.shape.columns[0]])

    def frame(self) -> pl.DataFrame:
        return self.shape.frame(self.columns)


def _from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)


class _Decoder:
    def __init__(self, catalog: F2Catalog, options: DecodeOptions) -> None:
        self.catalog = catalog
        self.options = options
        self.limits = options.limits
        self.measurements = _Rows(DECODED_MEASUREMENT)
        self.events = _Rows(DECODED_EVENT)
        self.rejected = _Rows(REJECTION)
        self.elements: dict[int, int] = {}

    def reject(
        self, raw_id: int, item: int, topic: str, error: DecodeError, event_id: str | None = None
    ) -> None:
        # The topic, detail and event id may quote the bad input: escaped, so the rejection is storable.
        self.rejected.add(
            raw_id,
            item,
            error.stage,
            error.reason,
            printable(error.detail),
            printable(topic),
            None if event_id is None else printable(event_id),
        )

    def ts_or_arrival(self, ts: datetime | None, arrival: datetime) -> datetime:
        if ts is not None and is_sane(
            ts, arrival, max_future_s=self.options.max_future_s, min_year=self.options.min_year
        ):
            return ts
        return arrival

    def message(self, raw_id: int, topic_text: str, payload: bytes, rx_us: int) -> None:
        arrival = _from_us(rx_us)
        try:
            topic = parse_topic(topic_text, self.limits)
            check_payload_size(payload, self.limits)
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DecodeError("not_utf8", f"payload is not UTF-8 text (byte {exc.start})") from exc
            if topic.kind == "event":
                self.event_message(raw_id, topic, topic_text, text, arrival)
                return
            readings = self.readings(topic, text)
        except DecodeError as error:
            self.reject(raw_id, 0, topic_text, error)
            self.elements[raw_id] = 1
            return
        except Exception as exc:  # a decoder bug must not stop the batch: the message is kept as rejected
            self.reject(raw_id, 0, topic_text, DecodeError("decoder_error", f"{type(exc).__name__}: {exc}"))
            self.elements[raw_id] = 1
            return
        self.elements[raw_id] = len(readings) or 1  # none at all is unaccounted: reconciliation says so
        kind = _KINDS[topic.kind]
        for item, reading in enumerate(readings):
            self.measurements.add(
                raw_id,
                item,
                topic.device_key,
                kind,
                reading.metric,
                reading.unit,
                self.ts_or_arrival(reading.ts, arrival),
                reading.value.value_num,
                reading.value.value_text,
                arrival,
            )

    def readings(self, topic: Topic, text: str) -> list[F2Reading]:
        if topic.kind == "plain":
            value, ts = decode_plain(text, self.options.default_tz, self.limits)
            return [F2Reading(topic.metric, value.unit, value, ts)]
        if topic.kind == "f2_sensor":
            return decode_f2_sensor(topic, text, self.catalog, self.options.default_tz)
        return decode_f2_doors(topic, text, self.catalog, self.limits)

    def event_message(self, raw_id: int, topic: Topic, topic_text: str, text: str, arrival: datetime) -> None:
        """Each element ends as exactly one event row or one rejection, whatever its siblings hold."""
        elements = split_events(text)
        self.elements[raw_id] = len(elements)
        for item, element in enumerate(elements):
            try:
                event = decode_event(element, topic.device_key, self.options.default_tz, self.limits)
            except DecodeError as error:
                self.reject(raw_id, item, topic_text, error, _event_id_of(element))
                continue
            except Exception as exc:  # a decoder bug rejects this element only, never its siblings
                error = DecodeError("decoder_error", f"{type(exc).__name__}: {exc}")
                self.reject(raw_id, item, topic_text, error, _event_id_of(element))
                continue
            self.events.add(
                raw_id,
                item,
                topic.device_key,
                event.event_id,
                event.schema,
                event.event_type,
                event.value_num,
                event.value_text,
                event.unit,
                # an insane device clock falls back to arrival time, as for measurements
                None if event.ts_device is None else self.ts_or_arrival(event.ts_device, arrival),
                arrival,
                event.meta_json,
            )


def _event_id_of(element: object) -> str | None:
    """The event_id a rejected element names, so that its device can be told which event failed."""
    event_id = element.get("event_id") if isinstance(element, dict) else None
    return event_id if isinstance(event_id, str) else None


def decode_batch(
    raw: pl.DataFrame,
    catalog: F2Catalog,
    options: DecodeOptions | None = None,
    *,
    vectorised: bool = True,
    column_wise_min_rows: int = COLUMN_WISE_MIN_ROWS,
) -> DecodedBatch:
    """`raw` has the `DECODE_INPUT` columns raw_id, topic, payload (bytes) and rx_us (listener receive
    time, µs); raw_id is unique.

    With `vectorised`, the common forms of all three formats are decoded as polars expressions over the
    whole batch (`plain_frame`, `events_frame`, `f2_frame`) and only the rest one by one; the result is
    the same, row for row and in the same order, as decoding every message one by one
    (`vectorised=False`). Every rejection comes from the per-message path, and so does every message of
    a format with fewer than `column_wise_min_rows` candidates in the page.
    """
    options = options or DecodeOptions()
    decoder = _Decoder(catalog, options)
    columns = raw.select("raw_id", "topic", "payload", "rx_us")
    if not vectorised:
        for raw_id, topic, payload, rx_us in columns.iter_rows():
            decoder.message(raw_id, topic, payload, rx_us)
        return DecodedBatch(
            decoder.measurements.frame(),
            decoder.events.frame(),
            decoder.rejected.frame(),
            _elements_frame(decoder.elements),
        )

    limits, tz = options.limits, options.default_tz
    sanity = {
        "min_year": options.min_year,
        "max_future_s": options.max_future_s,
        "min_rows": column_wise_min_rows,
    }
    plain = decode_plain_frame(columns, limits, **sanity)
    events, event_counts = decode_events_frame(columns, limits, tz, **sanity)
    f2, f2_counts = decode_f2_frame(columns, catalog, limits, tz, **sanity)
    counts = pl.concat(
        [plain.select(POSITION, "raw_id", elements=pl.lit(1, pl.Int32)), event_counts, f2_counts]
    )
    rest = columns.with_row_index(POSITION).join(counts.select(POSITION), on=POSITION, how="anti")
    # Rejections come only from the per-message path, so they are in order already; the measurements and
    # events of the paths are merged by the position of their message.
    measurement_positions: list[int] = []
    event_positions: list[int] = []
    element_positions: dict[int, int] = {}
    for position, raw_id, topic, payload, rx_us in rest.iter_rows():
        measurements_before, events_before = len(decoder.measurements), len(decoder.events)
        decoder.message(raw_id, topic, payload, rx_us)
        measurement_positions.extend([position] * (len(decoder.measurements) - measurements_before))
        event_positions.extend([position] * (len(decoder.events) - events_before))
        element_positions.setdefault(raw_id, position)
    slow_elements = _elements_frame(decoder.elements).with_columns(
        pl.Series(POSITION, [element_positions[r] for r in decoder.elements], dtype=pl.UInt32)
    )
    elements = pl.concat([counts, slow_elements.select(counts.columns)]).sort(POSITION).drop(POSITION)
    return DecodedBatch(
        _in_order([plain, f2], decoder.measurements.frame(), measurement_positions),
        _in_order([events], decoder.events.frame(), event_positions),
        decoder.rejected.frame(),
        elements,
    )


def _in_order(fast: list[pl.DataFrame], slow: pl.DataFrame, slow_positions: list[int]) -> pl.DataFrame:
    """All paths' rows merged back into the order of their messages (a stable sort keeps items in order:
    each message's rows come from one path, in item order)."""
    slow = slow.with_columns(pl.Series(POSITION, slow_positions, dtype=pl.UInt32))
    merged = pl.concat([frame.select(slow.columns) for frame in fast] + [slow])
    return merged.sort(POSITION, maintain_order=True).drop(POSITION)
