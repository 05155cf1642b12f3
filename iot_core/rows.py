"""Every row shape of the pipeline, defined once.

A column's name, polars type and PostgreSQL type are declared once in `COLUMNS`; a shape is an ordered
selection of those columns. The decoder's frames, the staging tables, the COPY column lists, the pandera
schemas and the tests all derive from these shapes, so adding a column is one edit here plus a migration.
Shapes named after a table (`RAW_MESSAGES`, `MEASUREMENTS`, `EVENTS`, `REJECTED`) list exactly that table's
columns; a test compares them with the migrated database.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

UTC_US = pl.Datetime("us", "UTC")


@dataclass(frozen=True, slots=True)
class Column:
    dtype: pl.DataType
    sql: str


COLUMNS: dict[str, Column] = {
    # identity and lineage
    "raw_id": Column(pl.Int64(), "bigint"),
    "batch_id": Column(pl.Int64(), "bigint"),
    "item": Column(pl.Int32(), "integer"),
    # stream entries
    "arrived_at": Column(UTC_US, "timestamp with time zone"),
    "stream": Column(pl.String(), "text"),
    "entry_ms": Column(pl.Int64(), "bigint"),
    "entry_seq": Column(pl.Int64(), "bigint"),
    "topic": Column(pl.String(), "text"),
    "payload": Column(pl.Binary(), "bytea"),
    "qos": Column(pl.Int16(), "smallint"),
    "retain": Column(pl.Boolean(), "boolean"),
    #: the broker sent the message again (MQTT DUP): a copy of one it sent before may be archived already
    "redelivered": Column(pl.Boolean(), "boolean"),
    "rx_us": Column(pl.Int64(), "bigint"),
    # dimensions
    "device_key": Column(pl.String(), "text"),
    "device_kind": Column(pl.String(), "text"),
    "device_id": Column(pl.Int32(), "integer"),
    "metric": Column(pl.String(), "text"),
    "metric_id": Column(pl.Int32(), "integer"),
    # values
    "ts": Column(UTC_US, "timestamp with time zone"),
    "value_num": Column(pl.Float64(), "double precision"),
    "value_text": Column(pl.String(), "text"),
    "unit": Column(pl.String(), "text"),
    # events
    "event_id": Column(pl.String(), "text"),
    "schema": Column(pl.Int32(), "integer"),
    "event_type": Column(pl.String(), "text"),
    "ts_device": Column(UTC_US, "timestamp with time zone"),
    "ts_server": Column(UTC_US, "timestamp with time zone"),
    "meta": Column(pl.String(), "jsonb"),
    # rejections
    "stage": Column(pl.String(), "text"),
    "reason": Column(pl.String(), "text"),
    "detail": Column(pl.String(), "text"),
    # reconciliation
    "elements": Column(pl.Int32(), "integer"),
}


@dataclass(frozen=True, slots=True)
class Shape:
    """An ordered set of columns from `COLUMNS`."""

    name: str
    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = [c for c in self.columns if c not in COLUMNS]
        if unknown:
            raise ValueError(f"shape {self.name}: unknown columns {unknown}")

    @property
    def schema(self) -> dict[str, pl.DataType]:
        """The polars schema of a frame of this shape."""
        return {name: COLUMNS[name].dtype for name in self.columns}

    def sql_types(self) -> dict[str, str]:
        return {name: COLUMNS[name].sql for name in self.columns}

    def column_list(self) -> str:
        """`a, b, c` for INSERT/COPY/SELECT column lists."""
        return ", ".join(self.columns)

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.schema)

    def frame(self, data: object, orient: str | None = None) -> pl.DataFrame:
        return pl.DataFrame(data, schema=self.schema, orient=orient)  # type: ignore[arg-type]

    def conform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame`'s columns of this shape, in order, with this shape's types."""
        return frame.select(self.columns).cast(self.schema)  # type: ignore[arg-type]

    def staging_ddl(self, table: str) -> str:
        """A temporary table for COPY, emptied at commit."""
        columns = ", ".join(f"{name} {COLUMNS[name].sql}" for name in self.columns)
        return f"CREATE TEMP TABLE IF NOT EXISTS {table} ({columns}) ON COMMIT DELETE ROWS"

    def without(self, *names: str) -> Shape:
        return Shape(self.name, tuple(c for c in self.columns if c not in names))

    def plus(self, *names: str) -> Shape:
        return Shape(self.name, (*self.columns, *names))


# --- tables ----------------------------------------------------------------------------------------------
RAW_MESSAGES = Shape(
    "raw_messages",
    (
        "raw_id",
        "arrived_at",
        "stream",
        "entry_ms",
        "entry_seq",
        "topic",
        "payload",
        "qos",
        "retain",
        "rx_us",
        "batch_id",
        "redelivered",
    ),
)
MEASUREMENTS = Shape(
    "measurements",
    ("ts", "device_id", "metric_id", "value_num", "value_text", "arrived_at", "raw_id", "batch_id"),
)
EVENTS = Shape(
    "events",
    (
        "device_id",
        "event_id",
        "schema",
        "event_type",
        "value_num",
        "value_text",
        "unit",
        "ts_device",
        "ts_server",
        "meta",
        "raw_id",
        "batch_id",
        "item",  # the element of its raw message (an event array)
    ),
)
REJECTED = Shape(
    "rejected",
    ("raw_id", "item", "stage", "reason", "detail", "topic", "arrived_at", "batch_id"),
)
TABLES: tuple[Shape, ...] = (RAW_MESSAGES, MEASUREMENTS, EVENTS, REJECTED)

# --- frames between the stages ----------------------------------------------------------------------------
#: A stream entry as it is landed (the database assigns raw_id; the batch is added on landing).
STREAM_ENTRY = RAW_MESSAGES.without("raw_id", "batch_id")
#: What the decoder reads of each landed message.
DECODE_INPUT = Shape("decode_input", ("raw_id", "topic", "payload", "rx_us", "arrived_at"))
#: A page of archived messages as the store step reads them: what the decoder reads, and whether the
#: broker sent the message again (its earlier copy may be archived already).
RAW_PAGE = DECODE_INPUT.plus("redelivered")
#: A decoded reading, with its device and metric still as keys (ids are assigned on storing).
DECODED_MEASUREMENT = Shape(
    "decoded_measurement",
    (
        "raw_id",
        "item",
        "device_key",
        "device_kind",
        "metric",
        "unit",
        "ts",
        "value_num",
        "value_text",
        "arrived_at",
    ),
)
#: A decoded event, with its device still as a key.
DECODED_EVENT = Shape(
    "decoded_event",
    ("raw_id", "item", "device_key", *EVENTS.without("device_id", "raw_id", "item", "batch_id").columns),
)
#: A rejection as the stages produce it: the topic is filled from the raw message when missing, and
#: `event_id` (when the decoder found one) addresses the device's ACK; it is not stored.
REJECTION = Shape("rejection", ("raw_id", "item", "stage", "reason", "detail", "topic", "event_id"))
#: Staged rows of the fact tables: the batch is set on insert, `item` orders duplicates.
STAGED_MEASUREMENT = MEASUREMENTS.without("batch_id").plus("item")
STAGED_EVENT = EVENTS.without("batch_id")
STAGED_REJECTION = REJECTED.without("batch_id")
#: Staged rows of `raw_elements`: how many elements the decoder found in a raw message.
STAGED_ELEMENTS = Shape("staged_elements", ("raw_id", "elements", "arrived_at"))
