"""Facts and rejections: measurements, events and rejected messages stored through staging tables, each
once (a redelivery is a duplicate, a different fact under the same key a conflict)."""

from __future__ import annotations

import polars as pl
import psycopg

from dagster_project.lib.rollups import recompute_keys
from dagster_project.lib.storage.catalog import device_ids, metric_ids, respelled_metric_ids, touch_devices
from dagster_project.lib.storage.staging import copy_frame, fresh_stage, with_batch, written_if_new
from iot_core.formats.units import with_canonical_units
from iot_core.rows import (
    EVENTS,
    MEASUREMENTS,
    REJECTED,
    REJECTION,
    STAGED_ELEMENTS,
    STAGED_EVENT,
    STAGED_MEASUREMENT,
    STAGED_REJECTION,
    Shape,
)


def _duplicates(
    frame: pl.DataFrame, key: list[str], what: str, content: list[pl.Expr] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(first row per key by raw_id/item, rejections of the later rows): at-least-once repeats, and with
    `content` (expressions over a row) repeats whose content differs from the first's, which are conflicts."""
    ordered = frame.sort("raw_id", "item")
    is_first = ordered.select(pl.struct(key).is_first_distinct()).to_series()
    if is_first.all():
        return ordered, _duplicate_rejections([], what)  # no key twice, the usual case
    first, later = ordered.filter(is_first), ordered.filter(~is_first)  # (raw_id, item) is one row
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
    rows = with_batch(table, staged, batch_id)
    if written_if_new(conn, lambda cur: copy_frame(cur, table.name, rows)):
        return staged.height, []
    with conn.cursor() as cur:
        fresh_stage(cur, shape, stage)
        copy_frame(cur, stage, shape.conform(staged))
        cur.execute(upsert, {"b": batch_id})
        if cur.rowcount == staged.height:
            return staged.height, []
        cur.execute(stored_duplicates)
        pairs = cur.fetchall()
    return staged.height - len(pairs), pairs


def store_measurements(
    conn: psycopg.Connection, frame: pl.DataFrame, batch_id: int
) -> tuple[int, pl.DataFrame]:
    """Upsert measurements, each unit in its canonical spelling (`iot_core.formats.units`); returns (rows
    written or confirmed, duplicate rejections)."""
    if frame.is_empty():
        return 0, REJECTION.empty()
    frame = with_canonical_units(frame, "unit")
    devices = device_ids(conn, frame.select("device_key", "device_kind"))
    metrics = metric_ids(conn, frame.select("metric", "unit"))
    keyed = frame.join(devices, on="device_key").join(metrics, on=["metric", "unit"])
    touch_devices(conn, keyed.select("device_id", "arrived_at"))
    _drop_respelled_copies(conn, keyed)
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


def _drop_respelled_copies(conn: psycopg.Connection, keyed: pl.DataFrame) -> None:
    """Delete the readings that these raw messages were stored as under a metric whose unit is spelled
    otherwise (`respelled_metric_ids`; none in most databases, then this is one look-up in `metrics`), and
    recompute their rollups: a message stored before sql/020 and processed again is stored under the
    canonical metric, once."""
    respelled = respelled_metric_ids(conn, keyed["metric"].unique().to_list())
    if not respelled:
        return
    gone = conn.execute(
        """DELETE FROM measurements WHERE raw_id = ANY(%s) AND metric_id = ANY(%s)
           RETURNING device_id, metric_id, date_trunc('hour', ts, 'UTC')""",
        (keyed["raw_id"].unique().to_list(), respelled),
    ).fetchall()
    recompute_keys(conn, gone)


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


#: An event's unit stored before sql/020 may be spelled otherwise: a redelivery is compared with its
#: canonical spelling (a re-run of the same raw message rewrites it in that spelling).
_EVENT_CONTENT_SQL = (
    "({t}.event_type, {t}.value_num, {t}.value_text, canonical_unit({t}.unit), {t}.meta, "
    "nullif({t}.ts_device, {t}.ts_server))"
)


def store_events(conn: psycopg.Connection, frame: pl.DataFrame, batch_id: int) -> tuple[int, pl.DataFrame]:
    """Upsert events, each unit in its canonical spelling; returns (rows written or confirmed, duplicate
    and conflict rejections)."""
    if frame.is_empty():
        return 0, REJECTION.empty()
    frame = with_canonical_units(frame, "unit")
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


def _of_stream(stream: str | None) -> str:
    """An SQL condition (on `raw_id`, parameters `first`, `last` and `stream`) that holds for the rows of
    `stream`'s messages in the span; none with `stream` None (a batch of every stream). A shard's batch
    shares its arrival span with the other shards' batches, whose rows are theirs to replace."""
    if stream is None:
        return ""
    return (
        " AND raw_id IN (SELECT raw_id FROM raw_messages WHERE arrived_at >= %(first)s"
        " AND arrived_at <= %(last)s AND stream = %(stream)s)"
    )


def _clear_earlier_batches(
    cur: psycopg.Cursor, table: str, raw: pl.DataFrame, batch_id: int, stream: str | None
) -> None:
    """Delete the rows of `table` (one per raw message or element, with its `arrived_at`) that other
    batches wrote in the arrival span of the page `raw` (of `stream`'s messages, for a shard's batch),
    which this batch is about to write again.

    Every message of the span is decoded again by this batch: on this page, or on a neighbouring one that
    shares its first or last arrival time, whose rows are this batch's own and stay. The index on
    `arrived_at` finds the span (nothing there on a first run) without matching the page's ids."""
    cur.execute(
        f"""DELETE FROM {table} WHERE arrived_at >= %(first)s AND arrived_at <= %(last)s
            AND batch_id <> %(b)s{_of_stream(stream)}""",
        {"first": raw["arrived_at"].min(), "last": raw["arrived_at"].max(), "b": batch_id, "stream": stream},
    )


#: Rejections a batch took out of `rejected` to write them again (see `store_rejected`): kept for the session
#: (a batch's pages commit one by one), each row marked with the batch that took it out.
_REJECTED_EARLIER_DDL = """CREATE TEMP TABLE IF NOT EXISTS rejected_earlier AS
    SELECT raw_id, item, stage, reason, detail, batch_id, batch_id AS taken_by FROM rejected WITH NO DATA"""


def store_rejected(
    conn: psycopg.Connection,
    rejected: pl.DataFrame,
    raw: pl.DataFrame,
    batch_id: int,
    stream: str | None = None,
) -> int:
    """Replace the rejections of the raw messages `raw` (`raw_id`, `arrived_at`): a re-run with a newer
    decoder may have fewer. A rejection found again unchanged keeps the batch that first wrote it.

    Rows other batches wrote in the page's arrival span go first, as for the other per-message tables
    (`_clear_earlier_batches`), but into `rejected_earlier`, from which an identical new row takes its
    batch back. A row this batch already took out (the span of a neighbouring page, which shares an
    arrival time with this one) is not taken out again: it may be the one an earlier page put back. With
    none taken out, the rows are copied straight into `rejected` when no key of theirs is held yet."""
    if raw.is_empty():
        return 0
    with conn.cursor() as cur:
        cur.execute(_REJECTED_EARLIER_DDL)
        cur.execute("DELETE FROM rejected_earlier WHERE taken_by <> %s", (batch_id,))
        cur.execute(
            f"""WITH gone AS (
                   DELETE FROM rejected r
                   WHERE arrived_at >= %(first)s AND arrived_at <= %(last)s AND batch_id <> %(b)s
                     AND NOT EXISTS (SELECT 1 FROM rejected_earlier e
                                     WHERE (e.raw_id, e.item) = (r.raw_id, r.item)){_of_stream(stream)}
                   RETURNING raw_id, item, stage, reason, detail, batch_id)
               INSERT INTO rejected_earlier SELECT *, %(b)s FROM gone""",
            {
                "first": raw["arrived_at"].min(),
                "last": raw["arrived_at"].max(),
                "b": batch_id,
                "stream": stream,
            },
        )
        if rejected.is_empty():
            return 0
        cur.execute("SELECT EXISTS (SELECT 1 FROM rejected_earlier)")
        taken_out = cur.fetchone()
    if not (taken_out and taken_out[0]):
        # No row to take its batch back from (a first run): the rows go straight in, in one pass, unless a
        # key is held already; the upsert below then writes them as it would have.
        direct = with_batch(REJECTED, rejected, batch_id)
        if written_if_new(conn, lambda cur: copy_frame(cur, "rejected", direct)):
            return rejected.height
    with conn.cursor() as cur:
        fresh_stage(cur, STAGED_REJECTION, "stage_rejected")
        copy_frame(cur, "stage_rejected", STAGED_REJECTION.conform(rejected))
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
    conn: psycopg.Connection,
    elements: pl.DataFrame,
    raw: pl.DataFrame,
    batch_id: int,
    stream: str | None = None,
) -> None:
    """Record how many elements the decoder found in each raw message of `raw` (`raw_id`, `arrived_at`)
    from `elements` (`raw_id`, `elements`), where that is not one: a message without a row had one element
    (most messages; a row per message cost a fifth of the store step). Rows an earlier batch wrote for these
    messages go first: a re-run with a newer decoder may find one element where it found several."""
    if raw.is_empty():
        return
    with conn.cursor() as cur:
        _clear_earlier_batches(cur, "raw_elements", raw, batch_id, stream)
    several = elements.filter(pl.col("elements") != 1)
    if several.is_empty():
        return
    rows = several.join(raw.select("raw_id", "arrived_at"), on="raw_id", how="left")
    direct = with_batch(STAGED_ELEMENTS.plus("batch_id"), rows, batch_id)
    if written_if_new(conn, lambda cur: copy_frame(cur, "raw_elements", direct)):
        return
    with conn.cursor() as cur:
        fresh_stage(cur, STAGED_ELEMENTS, "stage_elements")
        copy_frame(cur, "stage_elements", STAGED_ELEMENTS.conform(rows))
        cur.execute(
            f"""INSERT INTO raw_elements AS r ({STAGED_ELEMENTS.column_list()}, batch_id)
               SELECT {STAGED_ELEMENTS.column_list()}, %s FROM stage_elements
               ON CONFLICT (raw_id) DO UPDATE
               SET elements = excluded.elements, batch_id = excluded.batch_id""",
            (batch_id,),
        )
