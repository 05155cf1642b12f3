"""Re-processing history: rollups follow late readings, and a decoder change re-decodes a whole hour."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta

import paho.mqtt.client as mqtt
import psycopg
import pytest
from dagster import DagsterInstance

from dagster_project.lib.retention import continuous_aggregates, has_timescaledb
from iot_core.settings import Settings
from iot_core.streams import utc_from_ms
from tests.support.f2_messages import F2_TOPIC, f2_payload
from tests.support.hours import ClosedHour
from tests.support.reference import REFERENCE_004_EVENT
from tests.support.rollups import AGGREGATE, ROLLUPS

pytestmark = pytest.mark.services


def reading(value: float, ts_ms: int) -> str:
    ts = utc_from_ms(ts_ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"value": value, "unit": "C", "ts": ts})


def test_rollups_equal_an_aggregate_of_measurements_after_late_readings(
    clean_db: str, settings: Settings
) -> None:
    """On both paths: a plain table on PostgreSQL, a continuous aggregate on TimescaleDB
    (`IOT_TEST_PG_SERVER` picks the server)."""
    with psycopg.connect(clean_db) as conn:
        aggregate = "hourly_rollups" in continuous_aggregates(conn)
        assert aggregate == has_timescaledb(conn)
    earlier, later = ClosedHour(settings, hours_back=2), ClosedHour(settings, hours_back=1)
    for n in range(6):  # readings of the earlier hour, arriving in it
        earlier.add(60 + n, f"devices/roll{n % 2}/temperature", reading(20 + n, earlier.start_ms + n * 1000))
    earlier.add(70, "devices/roll0/state", "idle")  # text: not in the numeric rollups
    with DagsterInstance.ephemeral() as instance:
        first = earlier.run(instance)
        assert first.success
        with psycopg.connect(clean_db) as conn:
            assert conn.execute(ROLLUPS).fetchall() == conn.execute(AGGREGATE).fetchall()
            (count,) = conn.execute("SELECT sum(count) FROM hourly_rollups").fetchone()
            assert count == 6
        for n in range(4):  # late: read in the earlier hour, arriving an hour later; one newest of all
            ts_ms = earlier.start_ms + (3_000_000 if n == 3 else 10_000 + n * 1000)
            later.add(100 + n, f"devices/roll{n % 2}/temperature", reading(-5 - n, ts_ms))
        later.add(200, "devices/roll1/temperature", reading(30, later.start_ms + 200_000))  # on time
        assert later.run(instance).success
    with psycopg.connect(clean_db) as conn:
        rollups = conn.execute(ROLLUPS).fetchall()
        assert rollups == conn.execute(AGGREGATE).fetchall()
        by_key = {(r[0], r[2]): r for r in rollups}
    assert len(rollups) == 3  # two devices in the earlier hour, one in the later
    assert sum(r[3] for r in rollups) == 11
    newest = max((r for r in rollups if r[2] == utc_from_ms(earlier.start_ms)), key=lambda r: r[8])
    assert newest[7] == -8.0 and newest[8] == utc_from_ms(earlier.start_ms) + timedelta(seconds=3000)
    assert any(r[5] == 30 for r in by_key.values())


class AckListener:
    """Collects whatever arrives on the ACK and dead-letter topics."""

    def __init__(self, settings: Settings) -> None:
        self.received: list[str] = []
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"acks-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, *_: c.subscribe(
            [(settings.ack_topic_template.format(device_id="+"), 1), (settings.deadletter_topic, 1)]
        )
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = lambda _c, _u, m: self.received.append(m.topic)
        self.client.connect(settings.mqtt_host, settings.mqtt_port)
        self.client.loop_start()
        assert ready.wait(15), "no SUBACK"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


DATAPOINT = """UPDATE datapoints SET decimals = %s WHERE name = 'temperature' AND sensor_id =
                 (SELECT se.sensor_id FROM sensors se JOIN connectors cn USING (connector_id)
                  JOIN controllers ct USING (controller_id)
                  WHERE ct.mac = 'aabbccddee01' AND cn.port = 'J1' AND se.component = 'sensor-1')"""
F2_VALUES = """SELECT mt.name, m.value_num, m.batch_id, b.run_id FROM measurements m
               JOIN metrics mt USING (metric_id) JOIN batches b USING (batch_id)
               WHERE mt.name LIKE 'J1.sensor-1.%%' ORDER BY mt.name"""


def test_a_decoder_change_re_decodes_the_whole_hour_with_new_batches_and_no_acks(
    clean_db: str, settings: Settings
) -> None:
    hour = ClosedHour(settings)
    f2_ts = f"{utc_from_ms(hour.start_ms + 1_000):%Y-%m-%d %H:%M:%S}.000000"
    hour.add(10, F2_TOPIC, f2_payload(f2_ts))
    hour.add(11, "qs/v1/esp32-01/events", REFERENCE_004_EVENT)  # an event: re-decoding must not ACK it again
    with DagsterInstance.ephemeral() as instance:
        assert hour.run(instance).success
        with psycopg.connect(clean_db) as conn:
            before = {name: rest for name, *rest in conn.execute(F2_VALUES)}
        assert before["J1.sensor-1.temperature"][0] == 23.45
        acks = AckListener(settings)
        try:
            with psycopg.connect(clean_db) as conn:
                conn.execute(DATAPOINT, (1,))  # the sensor reports tenths, not hundredths
            rerun = hour.run(instance)
            time.sleep(1.0)
        finally:
            acks.close()
            with psycopg.connect(clean_db) as conn:
                conn.execute(DATAPOINT, (2,))
    assert rerun.success
    with psycopg.connect(clean_db) as conn:
        after = {name: rest for name, *rest in conn.execute(F2_VALUES)}
        (rollup_max,) = conn.execute(
            """SELECT max_value FROM hourly_rollups JOIN metrics USING (metric_id)
               WHERE name = 'J1.sensor-1.temperature'"""
        ).fetchone()
    value, batch_id, run_id = after["J1.sensor-1.temperature"]
    assert value == 234.5 and batch_id != before["J1.sensor-1.temperature"][1]
    assert run_id == rerun.run_id
    assert after["J1.sensor-1.humidity"] == before["J1.sensor-1.humidity"]  # unchanged: not rewritten
    assert rollup_max == 234.5
    [telemetry] = [m for m in rerun.get_asset_materialization_events() if m.asset_key.path == ["telemetry"]]
    assert telemetry.materialization.metadata["feedback_published"].value == "0/0"
    assert acks.received == []


def test_hour_ranges_join_consecutive_hours_only() -> None:
    from dagster_project.lib.rollups import hour_ranges

    h = [utc_from_ms(n * 3_600_000) for n in range(6)]
    assert hour_ranges([]) == []
    assert hour_ranges([h[3], h[0], h[1], h[1], h[4]]) == [(h[0], h[2]), (h[3], h[5])]
