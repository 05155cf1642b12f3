"""The pipeline on a private Redis Cluster: settings, listeners in this process or as `python -m
ingest_listener` processes on a shared subscription, and what became of every published message."""

from __future__ import annotations

import os
import sys
import uuid
from collections import Counter
from pathlib import Path

import psycopg

from iot_core.redis_client import redis_client
from iot_core.settings import DEFAULT_TOPICS, Settings
from iot_core.streams import EntryId, stream_names
from tests.support.listener_process import ListenerSubprocess
from tests.support.mosquitto import PrivateMosquitto
from tests.support.redis_cluster import PrivateRedisCluster
from tests.support.waiting import wait_until

SHARDS = 3
GROUP = "iot-cluster-listeners"


def cluster_settings(
    cluster: PrivateRedisCluster, broker: PrivateMosquitto, database_url: str, **overrides: object
) -> Settings:
    """Three shards on the cluster, every default topic behind one shared subscription, 5 s windows."""
    values: dict[str, object] = {
        "redis_url": cluster.url,
        "redis_mode": "cluster",
        "stream_prefix": f"iot_cluster:{uuid.uuid4().hex[:8]}:raw",
        "stream_shards": SHARDS,
        "database_url": database_url,
        "mqtt_host": broker.host,
        "mqtt_port": broker.port,
        "listener_topics": [f"$share/{GROUP}/{t}" for t in DEFAULT_TOPICS],
        "listener_metrics_port": 0,
        "window_seconds": 5,
        "window_grace_ms": 500,
        "sensor_lead_ms": 0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def settings_env(settings: Settings, client_id: str) -> dict[str, str]:
    """The environment of a listener process with `settings` and its own client id."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
    env.update(
        {
            "IOT_REDIS_URL": settings.redis_url.get_secret_value(),
            "IOT_REDIS_MODE": settings.redis_mode,
            "IOT_STREAM_PREFIX": settings.stream_prefix,
            "IOT_STREAM_SHARDS": str(settings.stream_shards),
            "IOT_MQTT_HOST": settings.mqtt_host,
            "IOT_MQTT_PORT": str(settings.mqtt_port),
            "IOT_LISTENER_TOPICS": ",".join(settings.listener_topics),
            "IOT_LISTENER_CLIENT_ID": client_id,
            "IOT_LISTENER_METRICS_PORT": "0",
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
    )
    return env


class ListenerProcess(ListenerSubprocess):
    """`python -m ingest_listener` with a fixed client id; its log is kept in `workdir`."""

    def __init__(self, settings: Settings, client_id: str, workdir: Path) -> None:
        super().__init__(settings_env(settings, client_id), workdir / f"{client_id}.log")

    def start(self) -> ListenerProcess:
        """Start it and wait until it has subscribed (each start of the process subscribes)."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.spawn()
        subscribed = wait_until(lambda: "subscribed, granted" in self.log_path.read_text()[offset:], 30)
        assert subscribed, self.log_path.read_text()[-3000:]
        return self


def stream_state(settings: Settings) -> tuple[int, int | None, dict[str, str]]:
    """Entries in all shards, the newest entry's ms, and the node serving each shard."""
    client = redis_client(settings.redis_url.get_secret_value(), "cluster")
    try:
        streams = stream_names(settings.stream_prefix, settings.stream_shards, cluster=True)
        total = sum(int(client.xlen(s)) for s in streams)
        lasts = [client.xrevrange(s, count=1) for s in streams]
        newest = max((EntryId.parse(e[0][0]).ms for e in lasts if e), default=None)
        return total, newest, {s: client.get_node_from_key(s).name for s in streams}
    finally:
        client.close()


OUTCOME_SQL = """
SELECT r.topic, r.payload,
       (SELECT count(*) FROM measurements m WHERE m.raw_id = r.raw_id)
         + (SELECT count(*) FROM events e WHERE e.raw_id = r.raw_id) AS facts,
       EXISTS (SELECT 1 FROM rejected x WHERE x.raw_id = r.raw_id AND x.stage <> 'duplicate') AS rejected
FROM raw_messages r
"""


def outcomes(database_url: str, messages: list[tuple[str, str]]) -> Counter[str]:
    """Per published message: `stored once` (one fact row over all its copies), `rejected`, `lost`
    (nowhere in the archive) or `stored N times`."""
    facts: Counter[tuple[str, str]] = Counter()
    rejected: set[tuple[str, str]] = set()
    archived: set[tuple[str, str]] = set()
    with psycopg.connect(database_url) as conn:
        for topic, payload, count, refused in conn.execute(OUTCOME_SQL):
            key = (topic, bytes(payload).decode())
            archived.add(key)
            facts[key] += count
            if refused:
                rejected.add(key)
    result: Counter[str] = Counter()
    for message in messages:
        if message not in archived:
            result["lost"] += 1
        elif facts[message] == 1:
            result["stored once"] += 1
        elif facts[message] == 0 and message in rejected:
            result["rejected"] += 1
        else:
            result[f"stored {facts[message]} times"] += 1
    return result
