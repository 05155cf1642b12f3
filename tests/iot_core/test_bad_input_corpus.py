"""Bad input loses nothing, end to end: every over-MQTT bad input kind, mixed with good messages, through a
private Mosquitto (project config) -> the real listener -> Redis -> the real sensor and job in-process ->
PostgreSQL. Every good message is stored with its expected values, every bad one rejected with its reason,
each event element answered exactly once however often its window runs, and reconciliation passes."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
import redis
from dagster import DagsterInstance, RunRequest, instance_for_test

from dagster_project.defs.ingest.assets import RESEND_FEEDBACK_TAG
from dagster_project.lib.storage.quality import reconcile
from ingest_listener import Listener
from iot_core.settings import Settings
from iot_core.streams import EntryId, utc_from_ms
from simulator.messages import MessageFactory
from tests.support import PrivateMosquitto
from tests.support.bad_inputs import BAD_INPUTS
from tests.support.pipeline import SensorDriver
from tests.support.stored import expected_events, expected_readings, read_stored
from tests.support.waiting import wait_until

pytestmark = pytest.mark.services
GOOD = 120
ARRAY_TOPIC = "qs/v1/arr-ev-01/events"
SENTINEL_TOPIC = "qs/v1/corpus-sentinel/acks"


def _array_event(event_id: str, **fields: object) -> dict[str, object]:
    return {"schema": 1, "event_id": event_id, "device_id": "arr-ev-01", "event_type": "door", **fields}


# An array whose middle element passes decoding and fails late (validation: event_type over 64 chars).
ARRAY_PAYLOAD = json.dumps(
    [_array_event("arr-a", value=1), _array_event("arr-b", event_type="t" * 100), _array_event("arr-c")]
).encode()


class Subscriber:
    """Collects every ACK and dead letter the pipeline publishes on the private broker."""

    def __init__(self, broker: PrivateMosquitto) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda client, *_: client.subscribe(
            [("qs/v1/+/acks", 1), ("qs/v1/deadletter", 1)]
        )
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber did not subscribe"
        self.sentinels = 0

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload))

    def settle(self, broker: PrivateMosquitto) -> list[tuple[str, dict]]:
        """Everything received so far: a sentinel published after the pipeline's PUBACKed messages is
        delivered after them, so once it is here, so are they."""
        self.sentinels += 1
        broker.publish_many([(SENTINEL_TOPIC, json.dumps({"sentinel": self.sentinels}))])
        assert wait_until(lambda: self._received_sentinels() >= self.sentinels, timeout_s=30), (
            "sentinel not delivered"
        )
        with self.lock:
            return [(t, json.loads(p)) for t, p in self.messages if t != SENTINEL_TOPIC]

    def _received_sentinels(self) -> int:
        with self.lock:
            return sum(1 for t, _ in self.messages if t == SENTINEL_TOPIC)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait_for_window_start(client: redis.Redis, window_ms: int, budget_ms: int) -> None:
    """Wait until the current window has at least `budget_ms` left, so a short burst fits in one window."""
    assert wait_until(
        lambda: _redis_ms(client) % window_ms < window_ms - budget_ms, timeout_s=window_ms / 1000 + 5
    )


def _redis_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _telemetry_metadata(instance: DagsterInstance, run_id: str) -> dict[str, object]:
    records = instance.get_records_for_run(run_id).records
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if materialization and materialization.asset_key.path == ["telemetry"]:
            return {k: v.value for k, v in materialization.metadata.items()}
    raise AssertionError(f"run {run_id} materialized no telemetry")


def test_every_bad_input_kind_is_rejected_with_its_reason_and_every_good_one_stored(
    clean_db: str, settings: Settings, tmp_path: Path
) -> None:
    bad = [b for b in BAD_INPUTS if b.over_mqtt]
    assert len(bad) >= 40 and len({(b.topic, b.payload) for b in bad}) == len(bad)
    factory = MessageFactory(11, devices=3, bad_share=0.0)
    now = datetime.now(UTC)
    good = [factory.next(now + timedelta(milliseconds=i)) for i in range(GOOD)]
    assert {m.kind for m in good} == {"plain", "event", "f2"} and not any(m.bad for m in good)
    # bad ones interleaved with good ones, and the array with an element that fails late
    published: list[tuple[str, bytes]] = [(m.topic, m.payload) for m in good]
    for i, b in enumerate(bad):
        published.insert(i * 3 % len(published), (b.topic, b.payload))
    published.append((ARRAY_TOPIC, ARRAY_PAYLOAD))

    with PrivateMosquitto() as broker:
        local = settings.model_copy(
            update={
                "mqtt_host": broker.host,
                "mqtt_port": broker.port,
                "listener_client_id": f"corpus-{uuid.uuid4().hex[:8]}",
                # `foo/bar` (an unknown topic) must reach the listener to be rejected
                "listener_topics": [*settings.listener_topics, "foo/#"],
            }
        )
        client = redis.Redis.from_url(local.redis_url.get_secret_value())
        listener = Listener(local)
        listener.start()
        subscriber = Subscriber(broker)
        try:
            assert listener.wait_ready(10), "listener did not connect and subscribe"
            _wait_for_window_start(client, local.window_ms, budget_ms=6000)
            broker.publish_many(published)
            assert wait_until(lambda: client.xlen(local.stream_prefix) >= len(published), timeout_s=60)
            entries = client.xrange(local.stream_prefix)
            assert len(entries) == len(published), "the listener wrote each message exactly once"
            first_ms, last_ms = (EntryId.parse(entries[i][0]).ms for i in (0, -1))

            with instance_for_test(temp_dir=str(tmp_path)) as instance:
                driver = SensorDriver(local, instance)
                requests = driver.drain(last_ms)
                assert requests, "the sensor requested no run"
                first_feedback = subscriber.settle(broker)
                _assert_database(clean_db, good, bad, first_ms, last_ms)
                _assert_feedback_once(first_feedback, clean_db)

                # the same windows again (a heal run, a re-execution from the UI): nothing is re-sent
                rerun_ids = []
                for request in requests:
                    driver.execute(request)
                    rerun_ids.append(instance.get_runs(limit=1)[0].run_id)
                assert subscriber.settle(broker) == first_feedback
                metadata = [_telemetry_metadata(instance, run_id) for run_id in rerun_ids]
                assert all(m["feedback_published"] == "0/0" for m in metadata)
                assert sum(int(m["feedback_already_sent"]) for m in metadata) == len(first_feedback)

                # ...unless the run asks for it
                for request in requests:
                    tags = {**request.tags, RESEND_FEEDBACK_TAG: "true"}
                    driver.execute(
                        RunRequest(
                            run_config=request.run_config, partition_key=request.partition_key, tags=tags
                        )
                    )
                resent = subscriber.settle(broker)
                assert Counter(map(repr, resent)) == Counter(map(repr, first_feedback * 2))
                _assert_database(clean_db, good, bad, first_ms, last_ms)
        finally:
            subscriber.close()
            assert listener.stop() == 0


def _assert_database(url: str, good: list, bad: list, first_ms: int, last_ms: int) -> None:
    stored = read_stored(url)
    raw, facts = stored.raw, stored.facts
    with psycopg.connect(url) as conn:
        array = conn.execute(
            """SELECT e.item, e.event_id FROM events e JOIN devices d USING (device_id)
               WHERE d.device_key = 'arr-ev-01' ORDER BY e.item"""
        ).fetchall()
        (array_id,) = raw[(ARRAY_TOPIC, ARRAY_PAYLOAD)]
        array_rejected = conn.execute(
            "SELECT item, stage FROM rejected WHERE raw_id = %s", (array_id,)
        ).fetchall()
        rec = reconcile(conn, utc_from_ms(first_ms), utc_from_ms(last_ms + 1))

    # every bad one: exactly one rejection, with its reason, and no fact row
    wrong = {
        b.name: (stored.reasons(raw_id), facts[raw_id])
        for b in bad
        for raw_id in raw[(b.topic, b.payload)]
        if stored.reasons(raw_id) != [b.reason] or facts[raw_id]
    }
    assert not wrong, f"bad inputs not rejected exactly once with their reason: {wrong}"
    # every good one: its fact rows, no rejection
    for m in good:
        for raw_id in raw[(m.topic, m.payload)]:
            assert raw_id not in stored.rejections and facts[raw_id] == len(m.readings) + len(m.events), m
    assert stored.readings == expected_readings(good)
    assert Counter({e: n for e, n in stored.events.items() if e[0] != "arr-ev-01"}) == expected_events(good)
    # the array: first and last element stored, the middle one rejected at validation, nothing twice
    assert array == [(0, "arr-a"), (2, "arr-c")]
    assert array_rejected == [(1, "validate")]
    assert rec.unaccounted == 0, rec.unaccounted_sample
    assert rec.raw == sum(map(len, raw.values())) == len(good) + len(bad) + 1
    elements = sum(len(m.readings) + len(m.events) for m in good) + len(bad) + 3
    assert rec.elements == rec.facts + rec.rejections == elements


def _assert_feedback_once(feedback: list[tuple[str, dict]], url: str) -> None:
    """Each event element answered once: `stored` ACKs for the stored events, a `rejected` ACK (where the
    topic names a device) and a dead letter for each rejected one."""
    with psycopg.connect(url) as conn:
        stored = Counter(
            conn.execute(
                "SELECT d.device_key, e.event_id FROM events e JOIN devices d USING (device_id)"
            ).fetchall()
        )
        (rejected_events,) = conn.execute("SELECT count(*) FROM rejected WHERE topic LIKE 'qs/%%'").fetchone()
    acks = Counter((b["device_id"], b["event_id"], b["status"]) for t, b in feedback if t.endswith("/acks"))
    assert Counter({(d, e, "stored"): n for (d, e), n in stored.items()}) == Counter(
        {k: n for k, n in acks.items() if k[2] == "stored"}
    )
    assert ("arr-ev-01", "arr-b", "rejected") in acks
    letters = [b for t, b in feedback if t == "qs/v1/deadletter"]
    assert len(letters) == rejected_events
    assert sum(n for k, n in acks.items() if k[2] == "rejected") == rejected_events
