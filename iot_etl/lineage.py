"""`iot-etl lineage`: from a stored value back to the message it came from, and from a message forward.

Every fact row carries `raw_id` (the archived message) and `batch_id` (the batch that wrote it, which
names its Dagster run), so a trace is a few index lookups; the run's page in the UI is linked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from iot_core.settings import Settings

_FACT_SELECT = {
    "measurement": """SELECT 'measurement', d.device_key, mt.name, mt.unit, m.ts, m.value_num, m.value_text,
                             m.raw_id, m.batch_id
                      FROM measurements m JOIN devices d USING (device_id)
                      JOIN metrics mt USING (metric_id)""",
    "event": """SELECT 'event', d.device_key, e.event_type || ' ' || e.event_id, coalesce(e.unit, ''),
                       coalesce(e.ts_device, e.ts_server), e.value_num, e.value_text, e.raw_id, e.batch_id
                FROM events e JOIN devices d USING (device_id)""",
}


@dataclass(frozen=True, slots=True)
class Fact:
    kind: str  # measurement | event
    device: str
    what: str  # metric name, or event type and id
    unit: str
    ts: datetime
    value_num: float | None
    value_text: str | None
    raw_id: int
    batch_id: int

    @property
    def value(self) -> str:
        shown = self.value_text if self.value_num is None else f"{self.value_num:g}"
        if self.value_num is not None and self.value_text is not None:
            shown = f"{self.value_num:g} ({self.value_text})"
        return f"{shown} {self.unit}".rstrip()


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: int
    run_id: str
    partition_key: str
    range_start: datetime
    range_end: datetime
    decoder_version: str


@dataclass(frozen=True, slots=True)
class RawMessage:
    raw_id: int
    topic: str
    payload: bytes
    arrived_at: datetime
    stream_id: str
    batch_id: int  # the batch that archived it

    @property
    def payload_text(self) -> str:
        try:
            return self.payload.decode("utf-8")
        except UnicodeDecodeError:
            return f"(not UTF-8) {self.payload!r}"


@dataclass
class Trace:
    raw: RawMessage | None
    facts: list[Fact] = field(default_factory=list)
    rejections: list[tuple[int, str, str, str]] = field(default_factory=list)  # item, stage, reason, detail
    batches: dict[int, Batch] = field(default_factory=dict)


def _fact(conn: psycopg.Connection, kind: str, where: str, params: dict) -> Fact | None:
    row = conn.execute(f"{_FACT_SELECT[kind]} WHERE {where} LIMIT 1", params).fetchone()
    return Fact(*row) if row else None


def find_reading(conn: psycopg.Connection, device: str, metric: str, at: datetime) -> Fact | None:
    """The reading of `device`'s `metric` (any unit) whose time is nearest `at`."""
    candidates = [
        _fact(
            conn,
            "measurement",
            f"d.device_key = %(d)s AND mt.name = %(m)s AND m.ts {op} %(at)s ORDER BY m.ts {order}",
            {"d": device, "m": metric, "at": at},
        )
        for op, order in (("<=", "DESC"), (">", "ASC"))
    ]
    found = [fact for fact in candidates if fact]
    return min(found, key=lambda f: abs((f.ts - at).total_seconds()), default=None)


def find_event(conn: psycopg.Connection, device: str, event_id: str) -> Fact | None:
    return _fact(conn, "event", "d.device_key = %(d)s AND e.event_id = %(e)s", {"d": device, "e": event_id})


def trace_raw(conn: psycopg.Connection, raw_id: int) -> Trace:
    """The archived message `raw_id`, what it became (facts or rejections) and the batches involved."""
    row = conn.execute(
        """SELECT raw_id, topic, payload, arrived_at, stream || ' ' || entry_ms || '-' || entry_seq, batch_id
           FROM raw_messages WHERE raw_id = %s""",
        (raw_id,),
    ).fetchone()
    trace = Trace(RawMessage(*row) if row else None)
    for kind, table in (("measurement", "m"), ("event", "e")):
        rows = conn.execute(f"{_FACT_SELECT[kind]} WHERE {table}.raw_id = %s", (raw_id,)).fetchall()
        trace.facts.extend(Fact(*r) for r in rows)
    trace.rejections = [
        (int(item), stage, reason, detail)
        for item, stage, reason, detail in conn.execute(
            "SELECT item, stage, reason, detail FROM rejected WHERE raw_id = %s ORDER BY item", (raw_id,)
        )
    ]
    batch_ids = {f.batch_id for f in trace.facts} | ({trace.raw.batch_id} if trace.raw else set())
    for r in conn.execute(
        """SELECT batch_id, run_id, partition_key, range_start, range_end, decoder_version
           FROM batches WHERE batch_id = ANY(%s)""",
        (sorted(batch_ids),),
    ):
        trace.batches[int(r[0])] = Batch(*r)
    return trace


def run_url(settings: Settings, run_id: str) -> str:
    host = "127.0.0.1" if settings.webserver_host in ("0.0.0.0", "::") else settings.webserver_host
    return f"http://{host}:{settings.webserver_port}/runs/{run_id}"


def _batch_lines(settings: Settings, label: str, batch: Batch | None, batch_id: int) -> list[str]:
    if batch is None:
        return [f"{label}: batch {batch_id} (no longer in batches)"]
    return [
        f"{label}: batch {batch.batch_id}, hour {batch.partition_key}, range "
        f"{batch.range_start:%Y-%m-%d %H:%M:%S}-{batch.range_end:%H:%M:%S}, decoder {batch.decoder_version}",
        f"  run {batch.run_id}",
        f"  {run_url(settings, batch.run_id)}",
    ]


def render(settings: Settings, trace: Trace, focus: Fact | None = None) -> str:
    """The trace as lines a person reads: the stored value(s), the raw message, the batches and runs."""
    lines: list[str] = []
    facts = [focus] if focus else trace.facts
    for fact in facts:
        lines += [
            f"{fact.kind}: {fact.device} {fact.what} at {fact.ts.isoformat()} = {fact.value}",
            *_batch_lines(settings, "  written by", trace.batches.get(fact.batch_id), fact.batch_id),
        ]
    for item, stage, reason, detail in trace.rejections:
        lines.append(f"rejected (item {item}) at {stage}: {reason}{': ' + detail if detail else ''}")
    if trace.raw is None:
        lines.append("raw message: not in the archive (retention may have removed it)")
    else:
        raw = trace.raw
        if not facts and not trace.rejections:
            lines.append("became: nothing yet (not decoded: run or backfill its hour)")
        lines += [
            f"raw message {raw.raw_id}: {raw.topic}",
            f"  payload: {raw.payload_text}",
            f"  arrived: {raw.arrived_at.isoformat()} (stream entry {raw.stream_id})",
            *_batch_lines(settings, "  archived by", trace.batches.get(raw.batch_id), raw.batch_id),
        ]
    return "\n".join(lines)


def lineage(
    settings: Settings,
    *,
    device: str | None = None,
    metric: str | None = None,
    at: datetime | None = None,
    event_id: str | None = None,
    raw_id: int | None = None,
) -> str | None:
    """The rendered trace for one of: device + metric + time, device + event id, raw id; None if not found."""
    with psycopg.connect(settings.database_url.get_secret_value(), connect_timeout=10) as conn:
        if raw_id is not None:
            trace = trace_raw(conn, raw_id)
            if trace.raw is None and not trace.facts and not trace.rejections:
                return None
            return render(settings, trace)
        if device and event_id:
            fact = find_event(conn, device, event_id)
        elif device and metric and at:
            fact = find_reading(conn, device, metric, at)
        else:
            raise ValueError("give --raw-id, or --device with --event-id, or --device, --metric and --at")
        if fact is None:
            return None
        return render(settings, trace_raw(conn, fact.raw_id), fact)
