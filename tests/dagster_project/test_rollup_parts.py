"""`hourly_rollups` on plain PostgreSQL from partial rollups per arrival minute: each refresh reads only
its own minutes, and the rollups still equal an aggregate of the measurements, through re-runs, late
readings, hours older than the parts kept, and readings that stop being numeric."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from dagster_project.lib.retention import continuous_aggregates
from dagster_project.lib.rollups import refresh_rollups
from tests.support.rollups import AGGREGATE, ROLLUPS, device_and_metric

pytestmark = pytest.mark.services


class Readings:
    """Readings stored as a batch stores them: a raw message each, arriving at a given moment."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.n = 0

    def add(self, device: str, metric: str, ts: datetime, value: float, arrived: datetime) -> None:
        device_id, metric_id = device_and_metric(self.conn, device, metric)
        self.n += 1
        (raw_id,) = self.conn.execute(
            "INSERT INTO raw_messages (arrived_at, stream, entry_ms, entry_seq, topic, payload, qos, "
            "retain, rx_us, batch_id) VALUES (%s, 'parts', %s, 0, 't', '', 1, false, 0, 0) RETURNING raw_id",
            (arrived, self.n),
        ).fetchone()
        self.conn.execute(
            "INSERT INTO measurements (ts, device_id, metric_id, value_num, arrived_at, raw_id, batch_id) "
            "VALUES (%s, %s, %s, %s, %s, %s, 0)",
            (ts, device_id, metric_id, value, arrived, raw_id),
        )


def parts(conn: psycopg.Connection) -> int:
    (count,) = conn.execute("SELECT count(*) FROM rollup_parts").fetchone() or (0,)
    return int(count)


def test_rollups_from_parts_equal_the_aggregate_of_the_measurements(clean_db: str) -> None:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        if "hourly_rollups" in continuous_aggregates(conn):
            pytest.skip("a continuous aggregate on TimescaleDB: no parts")
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
        readings = Readings(conn)
        minutes = [hour + timedelta(minutes=10 + m) for m in range(4)]
        for m, minute in enumerate(minutes):  # four windows of a minute, two devices, readings in the hour
            for k in range(5):
                for device in ("p-a", "p-b"):
                    at = minute + timedelta(seconds=10 * k)
                    readings.add(device, "temp", at, m * 10 + k + (0.5 if device == "p-b" else 0), at)
            refresh_rollups(conn, minute, minute + timedelta(minutes=1))
            assert conn.execute(ROLLUPS).fetchall() == conn.execute(AGGREGATE).fetchall(), m
        assert parts(conn) == 8, "one part per device-metric hour and arrival minute"

        # a re-run of a minute changes nothing, and keeps one part per minute
        before = conn.execute(ROLLUPS).fetchall()
        assert refresh_rollups(conn, minutes[1], minutes[1] + timedelta(minutes=1)) == 2
        assert conn.execute(ROLLUPS).fetchall() == before and parts(conn) == 8

        # late readings of the same hour, and one of an hour older than the parts serve, arriving now
        now = minutes[-1] + timedelta(minutes=1)
        readings.add("p-a", "temp", hour + timedelta(minutes=59), -40.0, now)
        readings.add("p-a", "temp", hour - timedelta(days=3), 99.0, now)
        readings.add("p-a", "temp", hour - timedelta(days=3, seconds=-1), 98.0, now - timedelta(days=3))
        assert refresh_rollups(conn, now, now + timedelta(seconds=10)) == 2
        assert conn.execute(ROLLUPS).fetchall() == conn.execute(AGGREGATE).fetchall()

        # p-b's readings of the first minute re-decoded as text: gone from the rollups with that minute's part
        conn.execute(
            """UPDATE measurements SET value_num = NULL, value_text = 'off'
               WHERE device_id = (SELECT device_id FROM devices WHERE device_key = 'p-b')"""
        )
        for minute in minutes:
            refresh_rollups(conn, minute, minute + timedelta(minutes=1))
        assert conn.execute(ROLLUPS).fetchall() == conn.execute(AGGREGATE).fetchall()
        keys = {
            key
            for (key,) in conn.execute("SELECT device_key FROM devices JOIN hourly_rollups USING (device_id)")
        }
        assert keys == {"p-a"}
