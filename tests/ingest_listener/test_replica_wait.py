"""`IOT_REDIS_WAIT_REPLICAS`: the listener's writer counts an entry written only once a replica holds it, on
a real master and replica (`redis-server --replicaof`); a master without any replica is written to
unconfirmed, with a warning, rather than stopping the writes."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator

import pytest
import redis

from ingest_listener.stream_writer import StreamWriter, entry_for_message
from tests.support.redis_server import PrivateRedis
from tests.support.waiting import wait_until

pytestmark = pytest.mark.services
STREAM = "iot_cluster:wait:raw"


@pytest.fixture
def master_and_replica() -> Iterator[tuple[PrivateRedis, PrivateRedis]]:
    master = PrivateRedis()
    with master, PrivateRedis(extra_args=["--replicaof", master.host, str(master.port)]) as replica:
        with master.client() as client:
            # online: past its first sync and acknowledging (before that ROLE does not list it)
            assert wait_until(
                lambda: client.info("replication").get("slave0", {}).get("state") == "online", 30
            )
        yield master, replica


def entries(n: int) -> list:
    return [
        entry_for_message(f"devices/d{i}/t", str(i).encode(), 1, False, prefix=STREAM, shards=1)
        for i in range(n)
    ]


def test_an_entry_counts_as_written_only_once_the_replica_holds_it(
    master_and_replica: tuple[PrivateRedis, PrivateRedis],
) -> None:
    master, replica = master_and_replica
    assert replica.pid is not None
    client = redis.Redis.from_url(master.url, socket_timeout=30)
    writer = StreamWriter(client, wait_replicas=1, wait_timeout_ms=200)
    assert all(isinstance(r, bytes) for r in writer.write(entries(10)))
    results: list = []
    os.kill(replica.pid, signal.SIGSTOP)  # connected, but it takes nothing in
    try:
        thread = threading.Thread(target=lambda: results.extend(writer.write(entries(10))), daemon=True)
        thread.start()
        assert wait_until(lambda: client.xlen(STREAM) == 20, 10), "the master has the entries"
        thread.join(1.0)
        assert thread.is_alive() and not results, "reported written while no replica held them"
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    thread.join(30)
    assert len(results) == 10 and all(isinstance(r, bytes) for r in results), results
    with replica.client() as on_replica:
        assert on_replica.xlen(STREAM) == 20


def test_a_master_without_replicas_is_written_to_unconfirmed_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with PrivateRedis() as alone:
        writer = StreamWriter(redis.Redis.from_url(alone.url), wait_replicas=1, wait_timeout_ms=100)
        with caplog.at_level(logging.WARNING, logger="ingest_listener.replica_wait"):
            first = writer.write(entries(5))
            second = writer.write(entries(5))
        assert all(isinstance(r, bytes) for r in first + second)
        assert sum("has no replica" in r.getMessage() for r in caplog.records) == 1
