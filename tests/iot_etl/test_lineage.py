"""`iot-etl lineage` on each of the three formats, both directions, on data run through the real job."""

from __future__ import annotations

import psycopg
import pytest
from click.testing import CliRunner
from dagster import DagsterInstance

from iot_core.settings import Settings
from iot_etl.cli import main
from tests.support.f2_messages import F2_TOPIC, f2_payload
from tests.support.hours import ClosedHour
from tests.support.reference import REFERENCE_004_EVENT

pytestmark = pytest.mark.services


def lineage(*args: str) -> str:
    result = CliRunner().invoke(main, ["lineage", *args])
    assert result.exit_code == 0, result.output
    return result.output


def raw_id_of(url: str, topic: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT min(raw_id) FROM raw_messages WHERE topic = %s", (topic,)).fetchone()[0]


def test_lineage_of_each_format_and_of_raw_ids(clean_db: str, settings: Settings) -> None:
    hour = ClosedHour(settings)
    hour.add(100, "devices/lin01/temperature", "27.93 °C")
    hour.add(101, "qs/v1/esp32-01/events", REFERENCE_004_EVENT)
    f2_ts = hour.window.label.split(" .. ")[0][:10] + " " + f"{hour.window.partition_key[-5:]}:42.000000"
    hour.add(102, F2_TOPIC, f2_payload(f2_ts))
    hour.add(103, "devices/lin01/humidity", b"\xff\xfe")
    hour.add(104, "qs/v1/esp32-01/events", REFERENCE_004_EVENT)  # a redelivery
    with DagsterInstance.ephemeral() as instance:
        hour.run(instance)
        [run] = instance.get_runs()
    url = f"http://{settings.webserver_host}:{settings.webserver_port}/runs/{run.run_id}"

    plain_at = hour.window.label.split(" .. ")[0].replace("+00:00", "") + "Z"  # nearest reading is found
    out = lineage("--device", "lin01", "--metric", "temperature", "--at", plain_at)
    assert "lin01 temperature" in out and "= 27.93 °C" in out
    assert "raw message 1: devices/lin01/temperature" in out and "payload: 27.93 °C" in out
    assert f"run {run.run_id}" in out and url in out and "arrived: " in out

    out = lineage("--device", "esp32-01", "--event-id", "esp32-01-1707523200000")
    assert "event: esp32-01 temperature esp32-01-1707523200000" in out and "= 23.5 °C" in out  # sent as C
    assert '"event_id": "esp32-01-1707523200000"' in out and url in out

    out = lineage("--device", "f2-aabbccddee01", "--metric", "J1.sensor-1.temperature", "--at", f2_ts)
    assert "= 23.45 °C" in out and F2_TOPIC in out and "01 03 04 09 29 02 2B" in out and url in out

    out = lineage("--raw-id", str(raw_id_of(clean_db, F2_TOPIC)))  # one message, two readings
    assert "J1.sensor-1.temperature" in out and "J1.sensor-1.humidity" in out and "= 55.5 %RH" in out

    out = lineage("--raw-id", str(raw_id_of(clean_db, "devices/lin01/humidity")))
    assert "rejected (item 0) at decode: not_utf8" in out and "(not UTF-8)" in out

    with psycopg.connect(clean_db) as conn:
        (redelivery,) = conn.execute(
            "SELECT max(raw_id) FROM raw_messages WHERE topic = 'qs/v1/esp32-01/events'"
        ).fetchone()
    out = lineage("--raw-id", str(redelivery))
    assert "at duplicate: duplicate_device and event_id: same device and event_id as raw message 2" in out

    missing = CliRunner().invoke(main, ["lineage", "--raw-id", "999999"])
    assert missing.exit_code == 1
    usage = CliRunner().invoke(main, ["lineage", "--device", "lin01"])
    assert usage.exit_code == 2
