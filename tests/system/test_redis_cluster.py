"""The pipeline on a three-master Redis Cluster (a replica each) on loopback: two listeners on one shared
subscription of a private Mosquitto write three hash-tagged shards, the sensor and its runs (in this
process, on a real Dagster instance) store them in PostgreSQL. Every message the broker acknowledged to
its publisher is stored exactly once (or rejected, for the tenth whose payload names another device):
as it is; with a listener SIGKILLed mid-burst and started again with its client id; and with a master
SIGKILLed mid-burst and its replica promoted (the listener acknowledges only what a replica confirmed)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from dagster import instance_for_test

from dagster_project.lib.compaction import trim_stream
from ingest_listener import Listener
from iot_core.redis_client import redis_client, streams_clock_ms
from iot_core.settings import Settings
from iot_etl.migrate import apply_migrations, ensure_database
from iot_etl.status import redis_status
from tests.support.cluster_pipeline import (
    ListenerProcess,
    cluster_settings,
    outcomes,
    stream_state,
)
from tests.support.database import database_url, drop_database
from tests.support.fault_stack import Publisher, messages_for
from tests.support.mosquitto import PrivateMosquitto
from tests.support.pipeline import SensorDriver
from tests.support.redis_cluster import PrivateRedisCluster
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.slow]
COUNT = 1500
#: enough devices for every shard to get some
DEVICES = 30
RATE = 750.0
EXPECTED = Counter({"stored once": COUNT * 9 // 10, "rejected": COUNT // 10})


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"iot_cluster_{uuid.uuid4().hex[:8]}"
    url = database_url(name)
    ensure_database(url)
    apply_migrations(url)
    yield url
    drop_database(name)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateRedisCluster]:
    with PrivateRedisCluster() as private:
        yield private


def in_process_listeners(settings: Settings) -> list[Listener]:
    tag = uuid.uuid4().hex[:6]
    listeners = [
        Listener(settings.model_copy(update={"listener_client_id": f"iot-cluster-{tag}-{i}"}))
        for i in range(2)
    ]
    for listener in listeners:
        listener.start()
    assert all(listener.wait_ready(15) for listener in listeners)
    return listeners


def wait_written(settings: Settings, count: int, timeout_s: float = 60) -> None:
    assert wait_until(lambda: stream_state(settings)[0] >= count, timeout_s), stream_state(settings)


def run_pipeline(settings: Settings, tmp_path: Path) -> dict[str, str]:
    """The sensor and its runs until every entry's window is processed; the node of each shard."""
    _total, newest, owners = stream_state(settings)
    assert newest is not None
    (tmp_path / "dagster").mkdir(exist_ok=True)
    with instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        SensorDriver(settings, instance).drain(newest, timeout_s=120)
    return owners


def test_two_listeners_and_the_pipeline_store_every_acknowledged_message_once(
    cluster: PrivateRedisCluster, database: str, tmp_path: Path
) -> None:
    messages = messages_for(f"cl{uuid.uuid4().hex[:6]}", COUNT, DEVICES)
    with PrivateMosquitto() as broker:
        settings = cluster_settings(cluster, broker, database)
        listeners = in_process_listeners(settings)
        try:
            assert Publisher(broker, messages, RATE).wait(120) == COUNT
            wait_written(settings, COUNT)
        finally:
            assert [listener.stop() for listener in listeners] == [0, 0]
    shares = [listener.metrics.value("iot_listener_entries_written_total") for listener in listeners]
    assert all(share > 0 for share in shares), shares
    owners = run_pipeline(settings, tmp_path)
    assert len(set(owners.values())) == 3, owners
    with cluster.client() as client:
        for stream in owners:
            node = cluster.master_of(stream)
            with cluster.node_client(node) as on_node:
                assert on_node.cluster("countkeysinslot", client.keyslot(stream)) == 1
    assert outcomes(database, messages) == EXPECTED
    lines = {(line.item, line.value) for line in redis_status(settings)}
    assert all(any(item == stream and "entries" in value for item, value in lines) for stream in owners), (
        lines
    )
    assert all(f"{stream} oldest unarchived" in dict(lines) for stream in owners), lines
    # compaction's trim, by key on each shard's master: everything archived goes
    client = redis_client(settings.redis_url.get_secret_value(), "cluster")
    total = stream_state(settings)[0]
    with psycopg.connect(database) as conn:
        now_ms = streams_clock_ms(client, list(owners))
        trimmed = [trim_stream(client, conn, stream, now_ms) for stream in owners]
    assert sum(t.entries for t in trimmed if t) == total and all(client.xlen(s) == 0 for s in owners)
    client.close()


def test_a_listener_sigkilled_mid_burst_and_restarted_with_its_client_id_loses_nothing(
    cluster: PrivateRedisCluster, database: str, tmp_path: Path
) -> None:
    messages = messages_for(f"ck{uuid.uuid4().hex[:6]}", COUNT, DEVICES)
    tag = uuid.uuid4().hex[:6]
    with PrivateMosquitto() as broker:
        settings = cluster_settings(cluster, broker, database)
        listeners = [ListenerProcess(settings, f"iot-cluster-{tag}-{i}", tmp_path).start() for i in range(2)]
        try:
            publisher = Publisher(broker, messages, RATE)
            assert wait_until(lambda: publisher.sent >= COUNT // 3, 30)
            listeners[1].kill()
            time.sleep(1.0)  # its share queues at the broker meanwhile
            listeners[1].start()
            assert publisher.wait(120) == COUNT
            wait_written(settings, COUNT)
        finally:
            codes = [listener.stop() for listener in listeners]
    assert codes == [0, 0], [listener.log_path.read_text()[-2000:] for listener in listeners]
    run_pipeline(settings, tmp_path)
    assert outcomes(database, messages) == EXPECTED


def test_a_master_sigkilled_mid_burst_and_its_replica_promoted_loses_nothing_acknowledged(
    database: str, tmp_path: Path
) -> None:
    messages = messages_for(f"cm{uuid.uuid4().hex[:6]}", COUNT, DEVICES)
    with PrivateRedisCluster(node_timeout_ms=2000) as cluster, PrivateMosquitto() as broker:
        settings = cluster_settings(cluster, broker, database)
        assert settings.wait_replicas == 1
        listeners = in_process_listeners(settings)
        try:
            publisher = Publisher(broker, messages, RATE)
            assert wait_until(lambda: publisher.sent >= COUNT // 3, 30)
            written_before = stream_state(settings)[0]
            victim = cluster.master_of(next(iter(stream_state(settings)[2])))
            victim.kill()
            killed = time.monotonic()
            cluster.wait_failover(victim)
            print(f"failover: {time.monotonic() - killed:.1f} s, {written_before} entries written before it")
            assert publisher.wait(120) == COUNT
            wait_written(settings, COUNT, timeout_s=90)
        finally:
            assert [listener.stop() for listener in listeners] == [0, 0]
        errors = sum(listener.metrics.value("iot_listener_redis_errors_total") for listener in listeners)
        assert errors > 0, "the listeners never saw the master go: the test killed nothing they wrote to"
        run_pipeline(settings, tmp_path)
    assert outcomes(database, messages) == EXPECTED
