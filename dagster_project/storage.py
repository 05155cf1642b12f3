"""Everything the assets write to and read from the database, as plain functions over a connection."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple, dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

import polars as pl
import psycopg

from dagster_project.binary_copy import encode, split_binary
from dagster_project.raw_ids import raw_id_span
from iot_core.formats.f2 import DatapointSpec
from iot_core.formats.f2_messages import F2Catalog, SensorEntry
from iot_core.rows import (
    DECODE_INPUT,
    EVENTS,
    MEASUREMENTS,
    REJECTION,
    STAGED_ELEMENTS,
    STAGED_EVENT,
    STAGED_MEASUREMENT,
    STAGED_REJECTION,
    STREAM_ENTRY,
    Shape,
)

_STAGED_RAW = STREAM_ENTRY.plus("batch_id")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BatchInfo:
    run_id: str
    partition_key: str
    range_start: datetime
    range_end: datetime
    start_id: str
    end_id: str
    streams: Sequence[str]
    decoder_version: str


def open_batch(conn: psycopg.Connection, info: BatchInfo) -> int:
    """The batch row of this run (one per run, created by whichever asset runs first), stamped with the
    calling transaction, which writes the batch's rows (see `verdicts`): every writer opens its batch."""
    row = conn.execute(
        """INSERT INTO batches (run_id, partition_key, range_start, range_end, start_id, end_id, streams,
                                decoder_version, written_xid)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, pg_current_xact_id())
           ON CONFLICT (run_id) DO UPDATE SET decoder_version = excluded.decoder_version,
                                              written_xid = excluded.written_xid
           RETURNING batch_id""",
        (
            info.run_id,
            info.partition_key,
            info.range_start,
            info.range_end,
            info.start_id,
            info.end_id,
            list(info.streams),
            info.decoder_version,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def finish_batch(conn: psycopg.Connection, batch_id: int, **counts: int) -> None:
    allowed = {"raw_count", "measurement_count", "event_count", "rejected_count", "duplicate_count"}
    if not counts.keys() <= allowed:
        raise ValueError(f"unknown batch counters {sorted(counts.keys() - allowed)}")
    sets = ", ".join(f"{name} = %({name})s" for name in counts)
    conn.execute(
        f"UPDATE batches SET {sets}, finished_at = clock_timestamp() WHERE batch_id = %(b)s",
        {**counts, "b": batch_id},
    )


def mark_landed(conn: psycopg.Connection, batch_id: int, read: int) -> None:
    """The batch's range is archived: `read` stream entries were read from it."""
    conn.execute(
        "UPDATE batches SET raw_count = %s, landed_at = clock_timestamp() WHERE batch_id = %s",
        (read, batch_id),
    )


def landed_ranges(
    conn: psycopg.Connection, start: datetime, end: datetime, *, decoded: bool = False
) -> list[tuple[int, int]]:
    """[start_ms, end_ms) of the archived (with `decoded`: archived and decoded) ranges that overlap
    [start, end), in order."""
    rows = conn.execute(
        f"""SELECT (extract(epoch FROM range_start) * 1000)::bigint,
                   (extract(epoch FROM range_end) * 1000)::bigint
            FROM batches WHERE landed_at IS NOT NULL {"AND finished_at IS NOT NULL" if decoded else ""}
              AND range_end > %s AND range_start < %s
            ORDER BY range_start""",
        (start, end),
    ).fetchall()
    return [(int(a), int(b)) for a, b in rows]


def land_raw(conn: psycopg.Connection, rows: Sequence[tuple], batch_id: int) -> int:
    """Insert stream entries (tuples in `STREAM_ENTRY` order) once; returns how many were new."""
    columns = _STAGED_RAW.column_list()

    # Rows arrive as Python tuples: per-row COPY is cheaper here than building a frame first (measured
    # with bench/run.py); binary spares the server parsing timestamps and hex (1.9 against 2.4 µs a row).
    def copy_rows(cur: psycopg.Cursor, table: str) -> None:
        with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT binary)") as copy:
            copy.set_types(list(_STAGED_RAW.sql_types().values()))
            for row in rows:
                copy.write_row((*row, batch_id))

    if _written_if_new(conn, lambda cur: copy_rows(cur, "raw_messages")):
        return len(rows)
    with conn.cursor() as cur:
        _fresh_stage(cur, _STAGED_RAW, "stage_raw")  # a window lands page by page in one transaction
        copy_rows(cur, "stage_raw")
        cur.execute(
            f"""INSERT INTO raw_messages ({columns}) SELECT {columns} FROM stage_raw
                ON CONFLICT (arrived_at, stream, entry_ms, entry_seq) DO NOTHING"""
        )
        return cur.rowcount


def last_processed_end(conn: psycopg.Connection) -> int | None:
    """The end (ms) of the latest range that was both archived and decoded, if any."""
    row = conn.execute(
        """SELECT (extract(epoch FROM max(range_end)) * 1000)::bigint FROM batches
           WHERE landed_at IS NOT NULL AND finished_at IS NOT NULL"""
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def load_raw(conn: psycopg.Connection, start: datetime, end: datetime) -> pl.DataFrame:
    """The archived messages that arrived in [start, end), in arrival order."""
    return pl.concat([DECODE_INPUT.empty(), *load_raw_pages(conn, start, end, page=None)])


def load_raw_pages(
    conn: psycopg.Connection, start: datetime, end: datetime, page: int | None
) -> Iterator[pl.DataFrame]:
    """The archived messages that arrived in [start, end), in arrival order, `page` rows at a time (all at
    once with None), each page a `DECODE_INPUT` frame.

    Read as CSV that polars parses (no Python object per row); pages follow the primary key, so each
    page is one index range scan however large the window is. The first page is a tenth of the others (at
    least 1,000 rows): nothing overlaps its reading (see `read_ahead`), and the window's first messages are
    stored the sooner. The pages after it grow by `PAGE_GROWTH` up to `page`, so that each is read in
    about the time the one before takes to decode and store, and no page waits for its reading.
    """
    after: tuple | None = None
    size = page if page is None else min(page, max(FIRST_PAGE_MIN_ROWS, page // 10))
    while True:
        frame, after = _raw_page(conn, start, end, after, size)
        if frame.height:
            yield frame
        if after is None or size is None or frame.height < size:
            return
        size = min(page, size * PAGE_GROWTH)


_RAW_KEY = "arrived_at, stream, entry_ms, entry_seq"
FIRST_PAGE_MIN_ROWS = 1000
#: Each page after the first is this many times the one before, up to `page`: a page is read ahead while
#: the one before is decoded and stored, which takes about three times as long as reading it.
PAGE_GROWTH = 3
#: One line per raw message: integers, and hex for every text or bytes field (no quoting to get wrong).
_RAW_PAGE_LINE = """concat_ws(',', raw_id, encode(convert_to(topic, 'UTF8'), 'hex'),
                   encode(payload, 'hex'), rx_us, (extract(epoch FROM arrived_at) * 1000000)::bigint,
                   encode(convert_to(stream, 'UTF8'), 'hex'), entry_ms, entry_seq)"""
_RAW_PAGE_SCHEMA = {
    "raw_id": pl.Int64,
    "topic": pl.String,
    "payload": pl.String,
    "rx_us": pl.Int64,
    "arrived_us": pl.Int64,
    "stream": pl.String,
    "entry_ms": pl.Int64,
    "entry_seq": pl.Int64,
}


def _raw_page(
    conn: psycopg.Connection, start: datetime, end: datetime, after: tuple | None, page: int | None
) -> tuple[pl.DataFrame, tuple | None]:
    """One page of `load_raw_pages` and the key of its last row (to continue after).

    The server joins the page into one text value that polars parses: one value to transfer and no
    Python object per row (a COPY or a row fetch hands over each row on its own).
    """
    params: dict[str, object] = {"s": start, "e": end, "n": page}
    resume = ""
    if after is not None:
        resume = f"AND ({_RAW_KEY}) > (%(a)s, %(b)s, %(c)s, %(d)s)"
        params.update(zip("abcd", after, strict=True))
    row = conn.execute(
        f"""SELECT string_agg({_RAW_PAGE_LINE}, E'\\n' ORDER BY {_RAW_KEY}) FROM (
                SELECT * FROM raw_messages WHERE arrived_at >= %(s)s AND arrived_at < %(e)s {resume}
                ORDER BY {_RAW_KEY} {"LIMIT %(n)s" if page is not None else ""}) AS page""",
        params,
    ).fetchone()
    if row is None or row[0] is None:
        return DECODE_INPUT.empty(), None
    lines = pl.read_csv(row[0].encode(), has_header=False, schema=_RAW_PAGE_SCHEMA, quote_char=None)
    # an empty field is read as null; every column is NOT NULL, so it is the empty text or bytes
    text = [pl.col(c).fill_null("").str.decode("hex").cast(pl.String) for c in ("topic", "stream")]
    lines = lines.with_columns(
        *text,
        pl.col("payload").fill_null("").str.decode("hex"),
        pl.col("arrived_us").cast(pl.Datetime("us", "UTC")).alias("arrived_at"),
    )
    key = tuple(lines.select("arrived_at", "stream", "entry_ms", "entry_seq").row(-1))
    return DECODE_INPUT.conform(lines), key


def load_f2_catalog(conn: psycopg.Connection) -> F2Catalog:
    catalog = F2Catalog()
    rows = conn.execute(
        """SELECT ct.mac, cn.port, cn.mode, se.component, se.model,
                  coalesce(array_agg(ARRAY[dp.name, dp.byte_offset::text, dp.byte_length::text,
                                           dp.is_signed::text, dp.decimals::text, dp.unit]
                                     ORDER BY dp.byte_offset) FILTER (WHERE dp.datapoint_id IS NOT NULL),
                           '{}')
           FROM controllers ct
           JOIN connectors cn USING (controller_id)
           JOIN sensors se USING (connector_id)
           LEFT JOIN datapoints dp USING (sensor_id)
           GROUP BY ct.mac, cn.port, cn.mode, se.component, se.model"""
    ).fetchall()
    for mac, port, mode, component, model, points in rows:
        specs = tuple(
            DatapointSpec(name, int(offset), int(length), signed == "true", int(decimals), unit)
            for name, offset, length, signed, decimals, unit in points
        )
        catalog.add(mac, port, component, SensorEntry(mode, model, specs))
    return catalog


def _ids(
    conn: psycopg.Connection, insert: str, rows: list[tuple], select: str, select_columns: int, schema: dict
) -> pl.DataFrame:
    """Insert the dimension rows that are new, then read the ids of all of them (key columns first)."""
    if not rows:
        return pl.DataFrame(schema=schema)
    columns = [list(col) for col in zip(*rows, strict=True)]
    with conn.cursor() as cur:
        cur.executemany(insert, rows)
        cur.execute(select, columns[:select_columns])
        return pl.DataFrame(cur.fetchall(), orient="row", schema=schema)


def device_ids(conn: psycopg.Connection, devices: pl.DataFrame) -> pl.DataFrame:
    """device_key, device_kind -> device_id, registering devices seen for the first time."""
    rows = devices.unique(subset="device_key", keep="first", maintain_order=True).rows()
    return _ids(
        conn,
        "INSERT INTO devices (device_key, kind) VALUES (%s, %s) ON CONFLICT (device_key) DO NOTHING",
        rows,
        "SELECT device_key, device_id FROM devices WHERE device_key = ANY(%s)",
        1,
        {"device_key": pl.String, "device_id": pl.Int32},
    )


def metric_ids(conn: psycopg.Connection, metrics: pl.DataFrame) -> pl.DataFrame:
    rows = metrics.unique(maintain_order=True).rows()
    return _ids(
        conn,
        "INSERT INTO metrics (name, unit) VALUES (%s, %s) ON CONFLICT (name, unit) DO NOTHING",
        rows,
        "SELECT name, unit, metric_id FROM metrics WHERE (name, unit) IN "
        "(SELECT * FROM unnest(%s::text[], %s::text[]))",
        2,
        {"metric": pl.String, "unit": pl.String, "metric_id": pl.Int32},
    )


def _fresh_stage(cur: psycopg.Cursor, shape: Shape, table: str) -> None:
    """An empty temp table `table` of `shape`: one transaction may stage several pages through it."""
    cur.execute(shape.staging_ddl(table))
    cur.execute(f"TRUNCATE {table}")


def _copy(cur: psycopg.Cursor, table: str, frame: pl.DataFrame) -> None:
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


def _with_batch(shape: Shape, frame: pl.DataFrame, batch_id: int) -> pl.DataFrame:
    """`frame`'s rows as `shape` (which has `batch_id`), written by batch `batch_id`."""
    return shape.conform(frame.with_columns(pl.lit(batch_id).alias("batch_id")))


def _written_if_new(conn: psycopg.Connection, write: Callable[[psycopg.Cursor], None]) -> bool:
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


def _duplicates(
    frame: pl.DataFrame, key: list[str], what: str, content: list[pl.Expr] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(first row per key by raw_id/item, rejections of the later rows): at-least-once repeats, and with
    `content` (expressions over a row) repeats whose content differs from the first's, which are conflicts."""
    ordered = frame.sort("raw_id", "item")
    first = ordered.unique(subset=key, keep="first", maintain_order=True)
    later = ordered.join(first.select("raw_id", "item"), on=["raw_id", "item"], how="anti")
    firsts = first.select([*key, pl.col("raw_id").alias("first_raw_id")])
    pairs = later.join(firsts, on=key, how="left").select("raw_id", "item", "first_raw_id", *_event_id(frame))
    if content is None:
        return first, _duplicate_rejections(pairs.rows(), what)
    signed = [pl.struct(content).hash().alias("content")]
    contents = first.select(*key, *signed).rename({"content": "first_content"})
    differs = (
        later.select("raw_id", "item", *key, *signed)
        .join(contents, on=key, how="left")
        .select("raw_id", "item", (pl.col("content") != pl.col("first_content")).alias("conflict"))
    )
    flagged = pairs.join(differs, on=["raw_id", "item"], how="left")
    return first, _duplicate_rejections(flagged.rows(), what)


def _event_id(frame: pl.DataFrame) -> list[str]:
    return ["event_id"] if "event_id" in frame.columns else []


def _duplicate_rejections(pairs: list[tuple], what: str) -> pl.DataFrame:
    """Rejections of (raw_id, item, first_raw_id[, event_id[, conflict]]) whose identity was already stored
    from raw message `first_raw_id`: a redelivery (`duplicate`), or with `conflict` another content under
    the same identity, which is refused at the store stage (the device hears of it, with a dead letter)."""
    return REJECTION.frame(
        [
            (_conflict if conflict else _redelivery)(raw_id, item, first, eid, what)
            for raw_id, item, first, eid, conflict in ((*pair, None, None)[:5] for pair in pairs)
        ],
        orient="row",
    )


def _redelivery(raw_id: int, item: int, first: int, event_id: str | None, what: str) -> tuple:
    return (
        raw_id,
        item,
        "duplicate",
        f"duplicate_{what}",
        f"same {what} as raw message {first}",
        "",
        event_id,
    )


def _conflict(raw_id: int, item: int, first: int, event_id: str | None, what: str) -> tuple:
    detail = f"same {what} as raw message {first}, with other content: a new event needs a new event_id"
    return (raw_id, item, "store", DUPLICATE_CONFLICT, detail, "", event_id)


def _upsert_staged(
    conn: psycopg.Connection,
    table: Shape,
    stage: str,
    shape: Shape,
    staged: pl.DataFrame,
    upsert: str,
    stored_duplicates: str,
    batch_id: int,
) -> tuple[int, list[tuple]]:
    """Write `staged` into `table` and find the staged rows whose identity is held by another raw message;
    returns (rows written or confirmed, (raw_id, item, first_raw_id) pairs).

    When no staged key is held yet (new messages) the rows are copied straight in. Otherwise they are
    copied into a temp table and upserted from it: the upsert writes a row unless its key is held already
    (by another raw message: a duplicate; or by the same one with the same values: a re-run), so when it
    wrote every staged row none is a duplicate and the look-up is skipped.
    """
    rows = _with_batch(table, staged, batch_id)
    if _written_if_new(conn, lambda cur: _copy(cur, table.name, rows)):
        return staged.height, []
    with conn.cursor() as cur:
        _fresh_stage(cur, shape, stage)
        _copy(cur, stage, shape.conform(staged))
        cur.execute(upsert, {"b": batch_id})
        if cur.rowcount == staged.height:
            return staged.height, []
        cur.execute(stored_duplicates)
        pairs = cur.fetchall()
    return staged.height - len(pairs), pairs


def store_measurements(
    conn: psycopg.Connection, frame: pl.DataFrame, batch_id: int
) -> tuple[int, pl.DataFrame]:
    """Upsert measurements; returns (rows written or confirmed, duplicate rejections)."""
    if frame.is_empty():
        return 0, REJECTION.empty()
    devices = device_ids(conn, frame.select("device_key", "device_kind"))
    metrics = metric_ids(conn, frame.select("metric", "unit"))
    keyed = frame.join(devices, on="device_key").join(metrics, on=["metric", "unit"])
    touch_devices(conn, keyed.select("device_id", "arrived_at"))
    first, dup_in_batch = _duplicates(keyed, ["device_id", "metric_id", "ts"], "device, metric and timestamp")
    stored, pairs = _upsert_staged(
        conn,
        MEASUREMENTS,
        "stage_measurements",
        STAGED_MEASUREMENT,
        first,
        f"""INSERT INTO measurements AS m ({MEASUREMENTS.column_list()})
           SELECT {MEASUREMENTS.without("batch_id").column_list()}, %(b)s FROM stage_measurements
           ON CONFLICT (device_id, metric_id, ts) DO UPDATE
           SET value_num = excluded.value_num, value_text = excluded.value_text,
               batch_id = excluded.batch_id
           WHERE m.raw_id = excluded.raw_id
             AND (m.value_num, m.value_text)
                 IS DISTINCT FROM (excluded.value_num, excluded.value_text)""",
        """SELECT s.raw_id, s.item, m.raw_id FROM stage_measurements s
           JOIN measurements m USING (device_id, metric_id, ts) WHERE m.raw_id <> s.raw_id""",
        batch_id,
    )
    return stored, pl.concat([dup_in_batch, _duplicate_rejections(pairs, "device, metric and timestamp")])


#: The reason of an event whose device and event_id were stored with another content.
DUPLICATE_CONFLICT = "duplicate_conflict"
#: What an event says, to tell a redelivery from a conflict: all but its times of arrival, and its device
#: time only where the device gave a sane one (one replaced by arrival time equals ts_server, which a
#: redelivery changes).
_EVENT_CONTENT = [
    pl.col("event_type"),
    pl.col("value_num"),
    pl.col("value_text"),
    pl.col("unit"),
    pl.col("meta"),
    pl.when(pl.col("ts_device") != pl.col("ts_server")).then(pl.col("ts_device")).alias("device_time"),
]
_EVENT_CONTENT_SQL = (
    "({t}.event_type, {t}.value_num, {t}.value_text, {t}.unit, {t}.meta, "
    "nullif({t}.ts_device, {t}.ts_server))"
)


def store_events(conn: psycopg.Connection, frame: pl.DataFrame, batch_id: int) -> tuple[int, pl.DataFrame]:
    if frame.is_empty():
        return 0, REJECTION.empty()
    devices = device_ids(conn, frame.select("device_key", pl.lit("event").alias("device_kind")))
    keyed = frame.join(devices, on="device_key")
    touch_devices(conn, keyed.select("device_id", pl.col("ts_server").alias("arrived_at")))
    first, dup_in_batch = _duplicates(keyed, ["device_id", "event_id"], "device and event_id", _EVENT_CONTENT)
    stored, pairs = _upsert_staged(
        conn,
        EVENTS,
        "stage_events",
        STAGED_EVENT,
        first,
        f"""INSERT INTO events AS e ({EVENTS.without("batch_id").column_list()}, batch_id)
           SELECT {EVENTS.without("batch_id").column_list()}, %(b)s FROM stage_events
           ON CONFLICT (device_id, event_id) DO UPDATE
           SET event_type = excluded.event_type, value_num = excluded.value_num,
               value_text = excluded.value_text, unit = excluded.unit, ts_device = excluded.ts_device,
               meta = excluded.meta, batch_id = excluded.batch_id
           WHERE e.raw_id = excluded.raw_id
             AND (e.event_type, e.value_num, e.value_text, e.unit, e.ts_device, e.meta)
                 IS DISTINCT FROM (excluded.event_type, excluded.value_num, excluded.value_text,
                                   excluded.unit, excluded.ts_device, excluded.meta)""",
        f"""SELECT s.raw_id, s.item, e.raw_id, s.event_id, {_EVENT_CONTENT_SQL.format(t="e")}
               IS DISTINCT FROM {_EVENT_CONTENT_SQL.format(t="s")}
           FROM stage_events s JOIN events e USING (device_id, event_id) WHERE e.raw_id <> s.raw_id""",
        batch_id,
    )
    return stored, pl.concat([dup_in_batch, _duplicate_rejections(pairs, "device and event_id")])


def _clear_earlier_batches(cur: psycopg.Cursor, table: str, raw: pl.DataFrame, batch_id: int) -> None:
    """Delete the rows of `table` (one per raw message or element, with its `arrived_at`) that other
    batches wrote in the arrival span of the page `raw`, which this batch is about to write again.

    Every message of the span is decoded again by this batch: on this page, or on a neighbouring one that
    shares its first or last arrival time, whose rows are this batch's own and stay. The index on
    `arrived_at` finds the span (nothing there on a first run) without matching the page's ids."""
    cur.execute(
        f"DELETE FROM {table} WHERE arrived_at >= %s AND arrived_at <= %s AND batch_id <> %s",
        (raw["arrived_at"].min(), raw["arrived_at"].max(), batch_id),
    )


#: Rejections a batch took out of `rejected` to write them again (see `store_rejected`): kept for the session
#: (a batch's pages commit one by one), each row marked with the batch that took it out.
_REJECTED_EARLIER_DDL = """CREATE TEMP TABLE IF NOT EXISTS rejected_earlier AS
    SELECT raw_id, item, stage, reason, detail, batch_id, batch_id AS taken_by FROM rejected WITH NO DATA"""


def store_rejected(conn: psycopg.Connection, rejected: pl.DataFrame, raw: pl.DataFrame, batch_id: int) -> int:
    """Replace the rejections of the raw messages `raw` (`raw_id`, `arrived_at`): a re-run with a newer
    decoder may have fewer. A rejection found again unchanged keeps the batch that first wrote it.

    Rows other batches wrote in the page's arrival span go first, as for the other per-message tables
    (`_clear_earlier_batches`), but into `rejected_earlier`, from which an identical new row takes its
    batch back. A row this batch already took out (the span of a neighbouring page, which shares an
    arrival time with this one) is not taken out again: it may be the one an earlier page put back."""
    if raw.is_empty():
        return 0
    with conn.cursor() as cur:
        cur.execute(_REJECTED_EARLIER_DDL)
        cur.execute("DELETE FROM rejected_earlier WHERE taken_by <> %s", (batch_id,))
        cur.execute(
            """WITH gone AS (
                   DELETE FROM rejected r
                   WHERE arrived_at >= %(first)s AND arrived_at <= %(last)s AND batch_id <> %(b)s
                     AND NOT EXISTS (SELECT 1 FROM rejected_earlier e
                                     WHERE (e.raw_id, e.item) = (r.raw_id, r.item))
                   RETURNING raw_id, item, stage, reason, detail, batch_id)
               INSERT INTO rejected_earlier SELECT *, %(b)s FROM gone""",
            {"first": raw["arrived_at"].min(), "last": raw["arrived_at"].max(), "b": batch_id},
        )
        if rejected.is_empty():
            return 0
        _fresh_stage(cur, STAGED_REJECTION, "stage_rejected")
        _copy(cur, "stage_rejected", STAGED_REJECTION.conform(rejected))
        columns = STAGED_REJECTION.column_list()
        cur.execute(
            f"""INSERT INTO rejected ({columns}, batch_id)
               SELECT {", ".join(f"s.{c}" for c in STAGED_REJECTION.columns)}, coalesce(e.batch_id, %(b)s)
               FROM stage_rejected s LEFT JOIN rejected_earlier e USING (raw_id, item, stage, reason, detail)
               ON CONFLICT (raw_id, item) DO UPDATE SET stage = excluded.stage, reason = excluded.reason,
                   detail = excluded.detail""",
            {"b": batch_id},
        )
        return rejected.height


def store_elements(
    conn: psycopg.Connection, elements: pl.DataFrame, raw: pl.DataFrame, batch_id: int
) -> None:
    """Record how many elements the decoder found in each raw message of `raw` (`raw_id`, `arrived_at`)
    from `elements` (`raw_id`, `elements`), where that is not one: a message without a row had one element
    (most messages; a row per message cost a fifth of the store step). Rows an earlier batch wrote for these
    messages go first: a re-run with a newer decoder may find one element where it found several."""
    if raw.is_empty():
        return
    with conn.cursor() as cur:
        _clear_earlier_batches(cur, "raw_elements", raw, batch_id)
    several = elements.filter(pl.col("elements") != 1)
    if several.is_empty():
        return
    rows = several.join(raw.select("raw_id", "arrived_at"), on="raw_id", how="left")
    direct = _with_batch(STAGED_ELEMENTS.plus("batch_id"), rows, batch_id)
    if _written_if_new(conn, lambda cur: _copy(cur, "raw_elements", direct)):
        return
    with conn.cursor() as cur:
        _fresh_stage(cur, STAGED_ELEMENTS, "stage_elements")
        _copy(cur, "stage_elements", STAGED_ELEMENTS.conform(rows))
        cur.execute(
            f"""INSERT INTO raw_elements AS r ({STAGED_ELEMENTS.column_list()}, batch_id)
               SELECT {STAGED_ELEMENTS.column_list()}, %s FROM stage_elements
               ON CONFLICT (raw_id) DO UPDATE
               SET elements = excluded.elements, batch_id = excluded.batch_id""",
            (batch_id,),
        )


def feedback_sent(
    conn: psycopg.Connection, keys: Sequence[tuple[int, int, str]]
) -> set[tuple[int, int, str]]:
    """Which of these (raw_id, item, kind) have been sent to devices already."""
    if not keys:
        return set()
    raw_ids, items, kinds = (list(column) for column in zip(*keys, strict=True))
    rows = conn.execute(
        """SELECT f.raw_id, f.item, f.kind FROM feedback_sent f
           JOIN unnest(%s::bigint[], %s::integer[], %s::text[]) AS k (raw_id, item, kind)
             USING (raw_id, item, kind)""",
        (raw_ids, items, kinds),
    ).fetchall()
    return {(int(r), int(i), str(k)) for r, i, k in rows}


def record_feedback_sent(
    conn: psycopg.Connection, sent: Sequence[tuple[int, int, str, str]], run_id: str
) -> None:
    """Remember (raw_id, item, kind, status) as sent by `run_id`."""
    if not sent:
        return
    raw_ids, items, kinds, statuses = (list(column) for column in zip(*sent, strict=True))
    conn.execute(
        """INSERT INTO feedback_sent (raw_id, item, kind, status, run_id)
           SELECT raw_id, item, kind, status, %s
           FROM unnest(%s::bigint[], %s::integer[], %s::text[], %s::text[]) AS s (raw_id, item, kind, status)
           ON CONFLICT (raw_id, item, kind) DO UPDATE
           SET status = excluded.status, run_id = excluded.run_id, sent_at = now()""",
        (run_id, raw_ids, items, kinds, statuses),
    )


@dataclass(frozen=True, slots=True)
class Reconciliation:
    raw: int
    with_facts: int
    rejected: int
    unaccounted: int  # raw messages whose elements do not each end in exactly one fact row or rejection
    unaccounted_sample: list[int]  # raw ids, the first few
    elements: int = 0  # elements the decoder counted (messages decoded before counting: 1 each)
    facts: int = 0  # fact rows
    rejections: int = 0  # rejection rows

    def totals(self) -> dict[str, int]:
        """The counts (not the sample): what adds up over disjoint ranges."""
        return {name: getattr(self, name) for name in _RECONCILIATION_COUNTS}

    def plus(self, totals: dict[str, int]) -> Reconciliation:
        """These counts and those of a disjoint range (`totals()` of it); the sample stays this one's."""
        summed = {name: getattr(self, name) + totals.get(name, 0) for name in _RECONCILIATION_COUNTS}
        return Reconciliation(**summed, unaccounted_sample=self.unaccounted_sample)


_RECONCILIATION_COUNTS = ("raw", "with_facts", "rejected", "unaccounted", "elements", "facts", "rejections")


def reconcile(conn: psycopg.Connection, start: datetime, end: datetime, sample: int = 20) -> Reconciliation:
    """Every element of every raw message of [start, end) must end in exactly one fact row or rejection:
    per message, facts + rejections equal the elements the decoder counted, and no event element is both
    stored and rejected. A message without a `raw_elements` row had one element, unless the batch that landed
    it started before that rule (`one_element_implied`): it may have been decoded before elements were
    counted, and needs at least one of either.

    Joins against per-message aggregates rather than correlated EXISTS subqueries, whose subplans fail
    under TimescaleDB's parallel, chunk-wise plans.
    """
    row = conn.execute(
        """WITH r AS (SELECT raw_id, batch_id AS landed_by FROM raw_messages
                      WHERE arrived_at >= %(s)s AND arrived_at < %(e)s),
                f AS (SELECT raw_id, count(*) AS n
                      FROM (SELECT raw_id FROM measurements
                            WHERE raw_id BETWEEN %(raw_lo)s AND %(raw_hi)s
                              AND raw_id IN (SELECT raw_id FROM r)
                            UNION ALL
                            SELECT raw_id FROM events
                            WHERE raw_id BETWEEN %(raw_lo)s AND %(raw_hi)s
                              AND raw_id IN (SELECT raw_id FROM r)) AS u
                      GROUP BY raw_id),
                x AS (SELECT raw_id, count(*) AS n, max(item) AS top FROM rejected
                      WHERE raw_id BETWEEN %(raw_lo)s AND %(raw_hi)s AND raw_id IN (SELECT raw_id FROM r)
                      GROUP BY raw_id),
                b AS (SELECT DISTINCT e.raw_id FROM events e JOIN rejected j USING (raw_id, item)
                      WHERE e.raw_id BETWEEN %(raw_lo)s AND %(raw_hi)s
                        AND e.raw_id IN (SELECT raw_id FROM r)),
                el AS (SELECT raw_id, elements FROM raw_elements
                       WHERE raw_id BETWEEN %(raw_lo)s AND %(raw_hi)s AND raw_id IN (SELECT raw_id FROM r)),
                m AS (SELECT r.raw_id, f.n AS facts, x.n AS rejections,
                             CASE WHEN el.elements IS NULL AND NOT coalesce(lb.started_at >= i.since, false)
                                  THEN f.raw_id IS NULL AND x.raw_id IS NULL
                                  ELSE coalesce(f.n, 0) + coalesce(x.n, 0) <> coalesce(el.elements, 1)
                                       OR x.top >= coalesce(el.elements, 1) OR b.raw_id IS NOT NULL
                             END AS bad,
                             coalesce(el.elements, 1) AS elements
                      FROM r LEFT JOIN f USING (raw_id) LEFT JOIN x USING (raw_id)
                             LEFT JOIN b USING (raw_id) LEFT JOIN el USING (raw_id)
                             LEFT JOIN batches lb ON lb.batch_id = r.landed_by
                             CROSS JOIN one_element_implied i)
           SELECT count(*),
                  count(facts),
                  count(rejections),
                  count(*) FILTER (WHERE bad),
                  (array_agg(raw_id ORDER BY raw_id) FILTER (WHERE bad))[1:%(n)s],
                  coalesce(sum(elements), 0),
                  coalesce(sum(facts), 0),
                  coalesce(sum(rejections), 0)
           FROM m""",
        {"n": sample, **raw_id_span(conn, start, end).params},
    ).fetchone()
    assert row is not None
    return Reconciliation(
        int(row[0]), int(row[1]), int(row[2]), int(row[3]), list(row[4] or []), *map(int, row[5:8])
    )


def touch_devices(conn: psycopg.Connection, seen: pl.DataFrame) -> None:
    """Move `devices.last_seen` forward to the newest arrival of each device in `seen`
    (`device_id`, `arrived_at`); never backwards, so re-processing old hours leaves it alone."""
    if seen.is_empty():
        return
    newest = seen.group_by("device_id").agg(pl.col("arrived_at").max())
    conn.execute(
        """UPDATE devices d SET last_seen = s.arrived_at
           FROM unnest(%s::integer[], %s::timestamptz[]) AS s (device_id, arrived_at)
           WHERE d.device_id = s.device_id AND (d.last_seen IS NULL OR d.last_seen < s.arrived_at)""",
        (newest["device_id"].to_list(), newest["arrived_at"].to_list()),
    )


# --- data quality ------------------------------------------------------------------------------------------
# Formats by topic shape, as the decoder tells them apart (anything else: 'unknown').
_FORMAT_OF_TOPIC = """CASE WHEN {t} LIKE 'devices/%%' THEN 'plain'
                           WHEN {t} LIKE 'qs/v1/%%' THEN 'event'
                           WHEN {t} ~ '^(stat|tele)/f2-' THEN 'f2'
                           ELSE 'unknown' END"""


@dataclass(frozen=True, slots=True)
class RejectGroup:
    format: str
    stage: str
    reason: str
    messages: int
    example: str  # one raw id with its topic and detail


@dataclass(frozen=True, slots=True)
class SchemaPassRate:
    raw: int
    rejected: int  # raw messages with at least one decode/validate/topic rejection
    groups: list[RejectGroup]

    @property
    def reject_share(self) -> float:
        return self.rejected / self.raw if self.raw else 0.0

    def totals(self) -> dict[str, Any]:
        return {"raw": self.raw, "rejected": self.rejected, "groups": [list(astuple(g)) for g in self.groups]}

    def plus(self, totals: dict[str, Any]) -> SchemaPassRate:
        """These counts and those of the range before (`totals()` of it), whose examples come first."""
        groups = _merged(
            [RejectGroup(*g) for g in totals["groups"]],
            self.groups,
            key=lambda g: (g.format, g.stage, g.reason),
            add=lambda a, b: replace(a, messages=a.messages + b.messages, example=a.example or b.example),
        )
        groups.sort(key=lambda g: (-g.messages, g.format, g.stage, g.reason))
        return SchemaPassRate(self.raw + totals["raw"], self.rejected + totals["rejected"], groups)


def _merged(earlier: list[T], later: list[T], key: Callable[[T], tuple], add: Callable[[T, T], T]) -> list[T]:
    """The items of two lists, those with the same key added (the earlier one first)."""
    by_key = {key(item): item for item in earlier}
    for item in later:
        k = key(item)
        by_key[k] = add(by_key[k], item) if k in by_key else item
    return list(by_key.values())


def schema_pass_rate(conn: psycopg.Connection, start: datetime, end: datetime) -> SchemaPassRate:
    """Raw messages of [start, end) rejected at topic/decode/validate (not duplicates), per format,
    stage and reason, with an example of each."""
    window = {"s": start, "e": end}
    (raw,) = conn.execute(
        "SELECT count(*) FROM raw_messages WHERE arrived_at >= %(s)s AND arrived_at < %(e)s", window
    ).fetchone() or (0,)
    (rejected,) = conn.execute(
        """SELECT count(DISTINCT raw_id) FROM rejected
           WHERE arrived_at >= %(s)s AND arrived_at < %(e)s AND stage <> 'duplicate'""",
        window,
    ).fetchone() or (0,)
    rows = conn.execute(
        f"""SELECT {_FORMAT_OF_TOPIC.format(t="topic")} AS format, stage, reason,
                   count(DISTINCT raw_id),
                   (array_agg('raw ' || raw_id || ' ' || topic || ': ' || left(detail, 120)
                              ORDER BY raw_id))[1]
            FROM rejected
            WHERE arrived_at >= %(s)s AND arrived_at < %(e)s AND stage <> 'duplicate'
            GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3""",
        window,
    ).fetchall()
    return SchemaPassRate(int(raw), int(rejected), [RejectGroup(*row) for row in rows])


@dataclass(frozen=True, slots=True)
class DuplicateCount:
    raw: int
    duplicates: int  # raw messages recognised as redeliveries
    by_format: dict[str, int]

    @property
    def share(self) -> float:
        return self.duplicates / self.raw if self.raw else 0.0

    def totals(self) -> dict[str, Any]:
        return {"raw": self.raw, "by_format": self.by_format}

    def plus(self, totals: dict[str, Any]) -> DuplicateCount:
        by_format = dict(self.by_format)
        for fmt, n in totals["by_format"].items():
            by_format[fmt] = by_format.get(fmt, 0) + int(n)
        by_format = dict(sorted(by_format.items()))
        return DuplicateCount(self.raw + totals["raw"], sum(by_format.values()), by_format)


def duplicate_count(conn: psycopg.Connection, start: datetime, end: datetime) -> DuplicateCount:
    window = {"s": start, "e": end}
    (raw,) = conn.execute(
        "SELECT count(*) FROM raw_messages WHERE arrived_at >= %(s)s AND arrived_at < %(e)s", window
    ).fetchone() or (0,)
    rows = conn.execute(
        f"""SELECT {_FORMAT_OF_TOPIC.format(t="topic")}, count(DISTINCT raw_id) FROM rejected
            WHERE arrived_at >= %(s)s AND arrived_at < %(e)s AND stage = 'duplicate'
            GROUP BY 1 ORDER BY 1""",
        window,
    ).fetchall()
    by_format = {str(f): int(n) for f, n in rows}
    return DuplicateCount(int(raw), sum(by_format.values()), by_format)


@dataclass(frozen=True, slots=True)
class Implausible:
    metric: str  # name [unit]
    min_value: float | None
    max_value: float | None
    readings: int  # numeric readings of the metric in the window
    implausible: int
    example: str


@dataclass(frozen=True, slots=True)
class Plausibility:
    metrics: list[Implausible]  # most implausible first

    def totals(self) -> dict[str, Any]:
        return {"metrics": [list(astuple(m)) for m in self.metrics]}

    def plus(self, totals: dict[str, Any]) -> Plausibility:
        """These counts and those of the range before (`totals()` of it), whose examples come first."""
        metrics = _merged(
            [Implausible(*m) for m in totals["metrics"]],
            self.metrics,
            key=lambda m: (m.metric, m.min_value, m.max_value),
            add=lambda a, b: replace(
                a,
                readings=a.readings + b.readings,
                implausible=a.implausible + b.implausible,
                example=a.example or b.example,
            ),
        )
        metrics.sort(key=lambda m: (-m.implausible, m.metric))
        return Plausibility(metrics)


def implausible_readings(conn: psycopg.Connection, start: datetime, end: datetime) -> Plausibility:
    """Numeric readings that arrived in [start, end), per metric with a range in `metric_ranges`, and how
    many lie outside it (metrics without implausible readings included, so the check shows coverage)."""
    span = raw_id_span(conn, start, end)
    rows = conn.execute(
        f"""SELECT mt.name || CASE WHEN mt.unit = '' THEN '' ELSE ' [' || mt.unit || ']' END,
                  r.min_value, r.max_value, count(*),
                  count(*) FILTER (WHERE m.value_num < r.min_value OR m.value_num > r.max_value),
                  coalesce((array_agg(d.device_key || ' ' || m.ts || ' = ' || m.value_num
                                      || ' (raw ' || m.raw_id || ')' ORDER BY m.raw_id)
                            FILTER (WHERE m.value_num < r.min_value OR m.value_num > r.max_value))[1], '')
           FROM measurements m
           JOIN metrics mt ON mt.metric_id = m.metric_id
           JOIN metric_ranges r ON r.name = mt.name AND r.unit = mt.unit
           JOIN devices d ON d.device_id = m.device_id
           WHERE {span.rows_of("m")} AND m.value_num IS NOT NULL
           GROUP BY 1, 2, 3 ORDER BY 5 DESC, 1""",
        span.params,
    ).fetchall()
    return Plausibility([Implausible(*row) for row in rows])


@dataclass(frozen=True, slots=True)
class Freshness:
    newest: datetime | None  # newest arrival of any fact row up to the checked moment
    silent: list[tuple[str, datetime]]  # (device_key, last_seen), longest silent first
    silent_total: int
    devices_seen: int


def device_freshness(conn: psycopg.Connection, at: datetime, silent_after_s: int, sample: int) -> Freshness:
    """Devices that have sent before but nothing for more than `silent_after_s` before `at`, by their
    `last_seen`. Devices seen after `at` count as live (an hour re-checked later knows they came back)."""
    row = conn.execute(
        """SELECT max(last_seen) FILTER (WHERE last_seen <= %(at)s),
                  count(*) FILTER (WHERE last_seen IS NOT NULL),
                  count(*) FILTER (WHERE last_seen < %(at)s - make_interval(secs => %(q)s))
           FROM devices""",
        {"at": at, "q": silent_after_s},
    ).fetchone()
    assert row is not None
    silent = conn.execute(
        """SELECT device_key, last_seen FROM devices
           WHERE last_seen < %(at)s - make_interval(secs => %(q)s)
           ORDER BY last_seen, device_key LIMIT %(n)s""",
        {"at": at, "q": silent_after_s, "n": sample},
    ).fetchall()
    return Freshness(row[0], [(str(k), t) for k, t in silent], int(row[2]), int(row[1]))
