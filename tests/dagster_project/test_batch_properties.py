"""Arbitrary bytes and arbitrary topics through the real batch functions into the real database:
`land_window` archives them, `decode_window` decodes and stores them; no exception escapes, and every
message (every element) ends as a fact row or a `rejected` row."""

from __future__ import annotations

import itertools
import json
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagster_project.lib.batch import decode_window, land_window, window_batch
from dagster_project.lib.feedback import FeedbackTopics
from dagster_project.lib.raw_entries import raw_row
from dagster_project.lib.storage.batches import BatchInfo
from dagster_project.lib.storage.quality import reconcile
from dagster_project.lib.windows import Window
from iot_core.formats.batch import DecodeOptions
from iot_core.streams import utc_from_ms

pytestmark = pytest.mark.services

STREAM = "prop:raw"
TOPICS = FeedbackTopics("qs/v1/{device_id}/acks", "qs/v1/deadletter")
BASE_MS = 1_700_000_000_000  # 2023-11-14: far from what other tests land
_windows = itertools.count()

KNOWN_TOPICS = (
    "devices/prop-1/temperature",
    "qs/v1/prop-ev/events",
    "stat/f2-aabbccddee01/door-sensors",
    "tele/f2-aabbccddee01/sensor-mode/J1/sensor-1",
    "stat/f2-aabbccddee01/access-control-mode/J2/strike-1",
)
topics = st.one_of(
    st.sampled_from(KNOWN_TOPICS).map(str.encode),
    st.tuples(st.sampled_from(("devices/", "qs/v1/", "stat/f2-aabbccddee01/", "")), st.text(max_size=30)).map(
        lambda parts: (parts[0] + parts[1]).encode("utf-8")
    ),
    st.binary(max_size=40),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
events = st.fixed_dictionaries(
    {
        "schema": st.sampled_from([1, 1, 2]),
        "event_id": st.text(max_size=12),
        "event_type": st.text(max_size=8),
    },
    optional={
        "device_id": st.just("prop-ev"),
        "value": json_values,
        "meta": json_values,
        "ts_device": st.text(),
    },
)
payloads = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=60).map(str.encode),
    json_values.map(lambda doc: json.dumps(doc).encode()),
    st.one_of(events, st.lists(events, max_size=4)).map(lambda doc: json.dumps(doc).encode()),
)
messages = st.lists(st.tuples(topics, payloads), min_size=1, max_size=8)


def _info(window: Window) -> BatchInfo:
    return window_batch(f"prop-{uuid.uuid4().hex}", "prop", window, [STREAM])


def test_arbitrary_messages_end_as_facts_or_rejections_in_the_database(clean_db: str) -> None:
    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(messages)
    def check(batch: list[tuple[bytes, bytes]]) -> None:
        start = BASE_MS + next(_windows) * 10_000
        window = Window(start, start + 10_000)
        rows = [
            raw_row(
                STREAM,
                f"{start + i}-0",
                {b"topic": topic, b"payload": payload, b"rx_us": b"%d" % ((start + i) * 1000)},
            )
            for i, (topic, payload) in enumerate(batch)
        ]
        with psycopg.connect(clean_db) as conn:
            landed = land_window(conn, _info(window), [rows])
            decoded = decode_window(conn, _info(window), window, DecodeOptions(), TOPICS)
        assert landed.read == landed.new == len(batch)
        assert decoded.raw == len(batch)
        with psycopg.connect(clean_db) as conn:
            raw_ids = [
                r
                for (r,) in conn.execute(
                    "SELECT raw_id FROM raw_messages WHERE arrived_at >= %s AND arrived_at < %s",
                    (utc_from_ms(window.start_ms), utc_from_ms(window.end_ms)),
                )
            ]
            ended = {
                r
                for (r,) in conn.execute(
                    """SELECT raw_id FROM measurements WHERE raw_id = ANY(%(ids)s)
                       UNION SELECT raw_id FROM events WHERE raw_id = ANY(%(ids)s)
                       UNION SELECT raw_id FROM rejected WHERE raw_id = ANY(%(ids)s)""",
                    {"ids": raw_ids},
                )
            }
            rec = reconcile(conn, utc_from_ms(window.start_ms), utc_from_ms(window.end_ms))
        assert len(raw_ids) == len(batch)
        assert ended == set(raw_ids), "a message ended neither as a fact row nor as a rejection"
        assert rec.unaccounted == 0, rec
        assert rec.elements == rec.facts + rec.rejections

    check()
