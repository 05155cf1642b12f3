"""The compressed-history benchmark at tiny scale: a row per history size, each measured with chunk skipping
on and off, and the backfill's lines. Runs where the suite's server has TimescaleDB 2.16 or later."""

from __future__ import annotations

import psycopg
import pytest

from bench.compressed_history import main
from tests.support.database import PG_SERVER, database_url

pytestmark = pytest.mark.services


def test_the_benchmark_prints_a_row_per_history_size_and_the_backfill(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with psycopg.connect(database_url("postgres")) as conn:
        (available,) = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
    if not available:
        pytest.skip("not a TimescaleDB server (IOT_TEST_PG_SERVER)")
    try:
        main(
            [
                "--server",
                PG_SERVER,
                "--days",
                "1,2",
                "--rows-per-day",
                "200",
                "--recent",
                "1200",
                "--repeat",
                "1",
            ]
        )
    except SystemExit as exc:  # TimescaleDB before 2.16
        pytest.skip(str(exc))
    out = capsys.readouterr().out
    rows = [
        line.split()
        for line in out.splitlines()
        if line.strip().endswith(tuple("0123456789")) and " d " in line
    ]
    assert [row[0] for row in rows] == ["0", "1", "2"], out
    assert [row[2] for row in rows] == ["0", "1", "2"], out  # compressed chunks
    assert "backfill of 3,600 readings into the oldest compressed day" in out
    assert "recompress_partial (1 chunk)" in out
