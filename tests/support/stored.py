"""What the database holds after a pipeline run, read in the shapes the end-to-end tests compare.

`read_stored` returns the archive by message (topic, payload) -> raw ids, every rejection per raw id,
fact rows per raw id, and the stored readings and events as tuples that the simulator's and the bad-input
corpus's expected rows (`simulator.expected`) turn into with `expected_readings` / `expected_events` (units
in their canonical spelling, `iot_core.formats.units`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import astuple, dataclass, replace

import psycopg

from iot_core.formats.units import canonical_unit
from simulator.expected import SentMessage


@dataclass(frozen=True)
class Rejection:
    reason: str
    stage: str


@dataclass(frozen=True)
class Stored:
    raw: dict[tuple[str, bytes], list[int]]  # (topic, payload) -> raw ids, in raw id order
    rejections: dict[int, list[Rejection]]  # raw id -> its rejections, in item order
    facts: Counter[int]  # raw id -> fact rows (measurements + events)
    readings: Counter[tuple]  # (device, metric, unit, value_num, value_text, device ts or None)
    events: Counter[tuple]  # (device, event_id, type, schema, value_num, value_text, unit, ts, meta JSON)

    def reasons(self, raw_id: int, *, duplicates: bool = True) -> list[str]:
        return [r.reason for r in self.rejections.get(raw_id, []) if duplicates or r.stage != "duplicate"]


def read_stored(url: str) -> Stored:
    with psycopg.connect(url) as conn:
        raw: dict[tuple[str, bytes], list[int]] = {}
        for raw_id, topic, payload in conn.execute(
            "SELECT raw_id, topic, payload FROM raw_messages ORDER BY raw_id"
        ):
            raw.setdefault((topic, bytes(payload)), []).append(raw_id)
        rejections: dict[int, list[Rejection]] = {}
        for raw_id, reason, stage in conn.execute(
            "SELECT raw_id, reason, stage FROM rejected ORDER BY raw_id, item"
        ):
            rejections.setdefault(raw_id, []).append(Rejection(reason, stage))
        facts = Counter(
            r for (r,) in conn.execute("SELECT raw_id FROM measurements UNION ALL SELECT raw_id FROM events")
        )
        readings = Counter(
            conn.execute(
                """SELECT d.device_key, m.name, m.unit, x.value_num, x.value_text,
                          CASE WHEN x.ts = x.arrived_at THEN NULL ELSE x.ts END
                   FROM measurements x JOIN devices d USING (device_id) JOIN metrics m USING (metric_id)"""
            ).fetchall()
        )
        events = Counter(
            (*row[:-1], json.dumps(row[-1], sort_keys=True))
            for row in conn.execute(
                """SELECT d.device_key, e.event_id, e.event_type, e.schema, e.value_num, e.value_text,
                          e.unit, e.ts_device, e.meta FROM events e JOIN devices d USING (device_id)"""
            )
        )
    return Stored(raw, rejections, facts, readings, events)


def expected_readings(messages: Iterable[SentMessage]) -> Counter[tuple]:
    """The readings as stored: the unit a message sent in its canonical spelling."""
    return Counter(
        (r.device_key, r.metric, canonical_unit(r.unit), r.value_num, r.value_text, r.ts)
        for m in messages
        for r in m.readings
    )


def expected_events(messages: Iterable[SentMessage]) -> Counter[tuple]:
    """The events as stored: the unit an event sent in its canonical spelling."""
    return Counter(
        (*astuple(replace(e, unit=canonical_unit(e.unit)))[:-1], json.dumps(e.meta, sort_keys=True))
        for m in messages
        for e in m.events
    )
