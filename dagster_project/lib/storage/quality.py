"""What the checks read: reconciliation of raw messages against facts and rejections, schema pass rate,
duplicates, implausible readings and device freshness, each over an arrival range."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

import psycopg

from dagster_project.lib.raw_ids import raw_id_span

T = TypeVar("T")


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


#: Reconciliation of an arrival range, with `reconcile_params` (see `reconcile`).
RECONCILE_SQL = """
WITH u (raw_id, item, raw, landed_by, fact, rej, elements) AS (
    SELECT raw_id, NULL::integer, 1, batch_id, 0, 0, NULL::integer FROM raw_messages
    WHERE arrived_at >= %(s)s AND arrived_at < %(e)s
    UNION ALL
    SELECT raw_id, NULL, 0, NULL, 1, 0, NULL FROM measurements WHERE raw_id BETWEEN %(raw_lo)s AND %(raw_hi)s
    UNION ALL
    SELECT raw_id, item, 0, NULL, 1, 0, NULL FROM events WHERE raw_id BETWEEN %(raw_lo)s AND %(raw_hi)s
    UNION ALL
    SELECT raw_id, item, 0, NULL, 0, 1, NULL FROM rejected WHERE raw_id BETWEEN %(raw_lo)s AND %(raw_hi)s
    UNION ALL
    SELECT raw_id, NULL, 0, NULL, 0, 0, elements FROM raw_elements
    WHERE raw_id BETWEEN %(raw_lo)s AND %(raw_hi)s),
per_item AS (SELECT raw_id, item, sum(raw) AS raw, max(landed_by) AS landed_by, sum(fact) AS facts,
                    sum(rej) AS rejections, max(elements) AS elements
             FROM u GROUP BY raw_id, item),
per_raw AS (SELECT raw_id, max(landed_by) AS landed_by, sum(facts) AS facts, sum(rejections) AS rejections,
                   max(elements) AS elements, max(item) FILTER (WHERE rejections > 0) AS top,
                   bool_or(item IS NOT NULL AND facts > 0 AND rejections > 0) AS both
            FROM per_item GROUP BY raw_id HAVING sum(raw) > 0),
m AS (SELECT p.raw_id, nullif(p.facts, 0) AS facts, nullif(p.rejections, 0) AS rejections,
             CASE WHEN p.elements IS NULL
                       AND NOT coalesce(lb.started_at >= (SELECT since FROM one_element_implied), false)
                  THEN p.facts = 0 AND p.rejections = 0
                  ELSE p.facts + p.rejections <> coalesce(p.elements, 1)
                       OR p.top >= coalesce(p.elements, 1) OR p.both
             END AS bad,
             coalesce(p.elements, 1) AS elements
      FROM per_raw p LEFT JOIN batches lb ON lb.batch_id = p.landed_by)
SELECT count(*), count(facts), count(rejections), count(*) FILTER (WHERE bad),
       (array_agg(raw_id ORDER BY raw_id) FILTER (WHERE bad))[1:%(n)s],
       coalesce(sum(elements), 0), coalesce(sum(facts), 0), coalesce(sum(rejections), 0)
FROM m"""


def reconcile_params(
    conn: psycopg.Connection, start: datetime, end: datetime, sample: int
) -> dict[str, object]:
    """The parameters of `RECONCILE_SQL` for [start, end), naming at most `sample` raw ids."""
    return {"n": sample, **raw_id_span(conn, start, end).params}


def reconcile(conn: psycopg.Connection, start: datetime, end: datetime, sample: int = 20) -> Reconciliation:
    """Every element of every raw message of [start, end) must end in exactly one fact row or rejection:
    per message, facts + rejections equal the elements the decoder counted, and no event element is both
    stored and rejected. A message without a `raw_elements` row had one element, unless the batch that landed
    it started before that rule (`one_element_implied`): it may have been decoded before elements were
    counted, and needs at least one of either.

    The range's raw messages and the rows of the raw-id span in the fact tables, rejections and element
    counts are read as one list and added up per (message, element), then per message: no join whose order
    depends on the planner's estimates. Joined per message instead (one aggregate per table, each joined to
    the range's messages), a new database's tables, not analysed yet, were estimated at a few rows, and the
    element counts were planned as a loop over all of them for every message: 22 s for a window of 50,000
    messages of the fleet's mix, 37 s under load. Rows of the span whose message arrived outside the range
    (a span widened by a heal) have no raw row there and are dropped by the per-message total.

    The rule's start is read once (a scalar subquery): joined as a table, `one_element_implied` (one row,
    never analysed: estimated at 2,260) passed `jit_above_cost` once the tables' estimates grew, and each
    run paid 70-250 ms of JIT compilation for a query that runs in milliseconds.
    """
    row = conn.execute(RECONCILE_SQL, reconcile_params(conn, start, end, sample)).fetchone()
    assert row is not None
    return Reconciliation(
        int(row[0]), int(row[1]), int(row[2]), int(row[3]), list(row[4] or []), *map(int, row[5:8])
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
