"""The ACL file of `iot-etl redis-acl` in cluster mode, loaded by every node of a private Redis Cluster: the
listener's user can make a cluster client and append (with WAIT) to the hash-tagged shards only, the
pipeline's can read, measure, trim and ask each master's clock, and neither can do more."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from dagster_project.defs.resources import RedisStreamsResource
from ingest_listener.stream_writer import StreamWriter, entry_for_message
from iot_core.redis_acl import render_acl
from iot_core.redis_client import redis_client
from iot_core.redis_memory import redis_memory
from iot_core.settings import Settings
from tests.support.redis_cluster import PrivateRedisCluster

pytestmark = [pytest.mark.services, pytest.mark.slow]
PREFIX = "iot_cluster:acl:raw"
#: The nodes need a user for replication (and redis-cli); the product's file has none, by design.
ADMIN = "user admin on >admin-password ~* &* +@all\n"


def settings_for(url_of: dict[str, str]) -> Settings:
    return Settings(
        redis_url=url_of["pipeline"],
        listener_redis_url=url_of["listener"],
        redis_mode="cluster",
        stream_prefix=PREFIX,
        stream_shards=3,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedisCluster]:
    urls = {"pipeline": "redis://pipe:pipe-pw@127.0.0.1:1/0", "listener": "redis://lis:lis-pw@127.0.0.1:1/0"}
    aclfile: Path = tmp_path_factory.mktemp("acl") / "users.acl"
    aclfile.write_text(render_acl(settings_for(urls)) + ADMIN)
    aclfile.chmod(0o600)
    with PrivateRedisCluster(aclfile=aclfile) as private:
        yield private


def test_each_user_can_do_its_part_on_every_master_and_nothing_else(cluster: PrivateRedisCluster) -> None:
    settings = settings_for(
        {"pipeline": cluster.url_for("pipe", "pipe-pw"), "listener": cluster.url_for("lis", "lis-pw")}
    )
    listener = redis_client(settings.listener_redis.get_secret_value(), "cluster", retries=0)
    writer = StreamWriter(listener, wait_replicas=settings.wait_replicas)
    batch = [
        entry_for_message(f"devices/d{i}/t", b"1", 1, False, prefix=PREFIX, shards=3, cluster=True)
        for i in range(30)
    ]
    assert all(isinstance(r, bytes) for r in writer.write(batch))
    for refused in (lambda: listener.xrange(batch[0].stream), lambda: listener.xadd("other", {"a": "b"})):
        with pytest.raises(redis.exceptions.NoPermissionError):
            refused()

    resource = RedisStreamsResource(
        url=settings.redis_url.get_secret_value(), stream_prefix=PREFIX, shards=3, cluster=True
    )
    pipeline = resource.client()
    assert {pipeline.get_node_from_key(s).name for s in resource.streams()} == {
        n.name for n in pipeline.get_primaries()
    }
    now_ms = resource.now_ms()
    assert now_ms >= resource.first_entry_ms()  # type: ignore[operator]
    assert sum(int(pipeline.xlen(s)) for s in resource.streams()) == 30
    assert redis_memory(pipeline).used_bytes > 0
    assert all(pipeline.memory_usage(s) for s in resource.streams())
    assert (
        sum(
            int(pipeline.xtrim(s, minid=f"{now_ms + 60_000}-0", approximate=False))
            for s in resource.streams()
        )
        == 30
    )
    with pytest.raises(redis.exceptions.NoPermissionError):
        pipeline.xadd(resource.streams()[0], {"a": "b"})
    with pytest.raises(redis.exceptions.NoPermissionError):
        pipeline.cluster_failover(target_node=pipeline.get_primaries()[0])
