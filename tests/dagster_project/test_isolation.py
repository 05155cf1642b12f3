"""Rows the database refuses are isolated and rejected with its message; the rest of the batch is stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from dagster_project.lib.isolation import store_isolating
from dagster_project.lib.storage.batches import BatchInfo, open_batch
from dagster_project.lib.storage.facts import store_measurements
from iot_core.rows import DECODED_MEASUREMENT

pytestmark = pytest.mark.services


def test_a_refused_row_is_rejected_and_its_neighbours_stored(clean_db: str) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    texts = ["ok-0", "ok-1", "bad\x00nul", "ok-3", "ok-4", "ok-5", "also\x00bad", "ok-7"]
    frame = DECODED_MEASUREMENT.frame(
        {
            "raw_id": list(range(1, len(texts) + 1)),
            "item": [0] * len(texts),
            "device_key": ["isolate-1"] * len(texts),
            "device_kind": ["plain"] * len(texts),
            "metric": ["status"] * len(texts),
            "unit": [""] * len(texts),
            "ts": [at + timedelta(seconds=n) for n in range(len(texts))],
            "value_num": [None] * len(texts),
            "value_text": texts,
            "arrived_at": [at] * len(texts),
        }
    )
    with psycopg.connect(clean_db) as conn:
        batch_id = open_batch(conn, BatchInfo("isolation-test", "p", at, at, "0-0", "0-0", ["s"], "1"))
        stored, rejected = store_isolating(conn, frame, batch_id, store_measurements)
        kept = sorted(t for (t,) in conn.execute("SELECT value_text FROM measurements"))
    assert stored == 6
    assert kept == sorted(t for t in texts if "\x00" not in t)
    assert sorted(rejected["raw_id"].to_list()) == [3, 7]
    assert set(rejected["reason"]) == {"database_refused"} and set(rejected["stage"]) == {"store"}
    assert all("0x00" in detail for detail in rejected["detail"])
