"""What was sent is recorded once per element and kind: a window's first run copies its rows straight in,
a run that sends again (or overlaps what was recorded) updates those rows and adds the rest, and what is
recorded is found by raw-id range."""

from __future__ import annotations

import polars as pl
import psycopg
import pytest

from dagster_project.lib.storage.feedback import SENT_KEY, feedback_sent, record_feedback_sent

pytestmark = pytest.mark.services


def _sent(raw_ids: range, status: str) -> pl.DataFrame:
    count = len(raw_ids)
    return pl.DataFrame(
        {"raw_id": list(raw_ids), "item": [0] * count, "kind": ["ack"] * count, "status": [status] * count},
        schema={**SENT_KEY, "status": pl.String},
    )


def test_first_records_are_copied_and_a_second_run_updates_its_own_and_adds_the_rest(clean_db: str) -> None:
    with psycopg.connect(clean_db) as conn:
        record_feedback_sent(conn, _sent(range(1, 1_001), "stored"), "run-1")
        record_feedback_sent(conn, _sent(range(501, 1_501), "duplicate"), "run-2")  # 500 held, 500 new
        conn.commit()
        rows = conn.execute(
            """SELECT run_id, status, count(*), min(raw_id), max(raw_id) FROM feedback_sent
               GROUP BY 1, 2 ORDER BY 1"""
        ).fetchall()
        assert rows == [("run-1", "stored", 500, 1, 500), ("run-2", "duplicate", 1_000, 501, 1_500)]
        found = feedback_sent(conn, 990, 1_010)
        assert found.schema == pl.Schema(SENT_KEY)
        assert found["raw_id"].sort().to_list() == list(range(990, 1_011))
        assert feedback_sent(conn, 2_000, 3_000).is_empty()
