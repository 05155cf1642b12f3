"""A real listener against a private broker and the shared Redis, and what it wrote to its streams."""

from __future__ import annotations

import urllib.request
from uuid import uuid4

import redis

from ingest_listener import Listener
from iot_core.settings import Settings
from iot_core.streams import stream_names
from tests.support.mosquitto import PrivateMosquitto

SYSTEM_REDIS = "redis://127.0.0.1:6379/0"


def make_settings(broker: PrivateMosquitto, prefix: str, **overrides: object) -> Settings:
    """A listener's settings for `broker`, writing one stream `prefix` on the shared Redis."""
    values: dict[str, object] = {
        "mqtt_host": broker.host,
        "mqtt_port": broker.port,
        "redis_url": SYSTEM_REDIS,
        "stream_prefix": prefix,
        "stream_shards": 1,
        "listener_client_id": f"test-listener-{uuid4().hex[:10]}",
        "listener_metrics_port": 0,
        "listener_topics": ["devices/#", "qs/v1/+/events", "stat/#", "tele/#"],
        "listener_qos": 1,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def started(settings: Settings) -> Listener:
    """A listener that has connected and subscribed (stopped again when it does not within 10 s)."""
    listener = Listener(settings)
    listener.start()
    if not listener.wait_ready(10):
        listener.stop()
        raise AssertionError("listener did not connect and subscribe within 10 s")
    return listener


def entries(settings: Settings, client: redis.Redis | None = None) -> list[dict[bytes, bytes]]:
    """All entries of all the settings' streams (field dicts)."""
    own = client is None
    client = client or redis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        out: list[dict[bytes, bytes]] = []
        for stream in stream_names(settings.stream_prefix, settings.stream_shards):
            out.extend(fields for _id, fields in client.xrange(stream))
        return out
    finally:
        if own:
            client.close()


def count(settings: Settings, client: redis.Redis | None = None) -> int:
    """How many entries the settings' streams hold."""
    own = client is None
    client = client or redis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        return sum(client.xlen(s) for s in stream_names(settings.stream_prefix, settings.stream_shards))
    finally:
        if own:
            client.close()


def listener_metric(port: int, name: str) -> float | None:
    """A metric's value on a listener's /metrics (`name` with its labels, e.g. `x{qos="1"}`), None while
    the endpoint does not answer or has no such line."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None
