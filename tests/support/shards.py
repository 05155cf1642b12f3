"""A pipeline of several stream shards on the real services, with a database and stream prefix of its own
(`iot_shards_*`, `iotshard_*`), and entries written into a chosen shard as the listener would."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from pydantic import SecretStr

from iot_core.settings import Settings
from iot_core.streams import stream_for_topic
from iot_etl.migrate import apply_migrations, ensure_database
from tests.support.database import database_url, drop_database


@contextmanager
def sharded_settings(base: Settings, shards: int, **update: object) -> Iterator[Settings]:
    """`base` on a new migrated database and stream prefix with `shards` shards; both removed after."""
    tag = uuid.uuid4().hex[:10]
    name, prefix = f"iot_shards_{tag}", f"iotshard_{tag}:raw"
    url = database_url(name)
    settings = base.model_copy(
        update={
            "database_url": SecretStr(url),
            "database_owner_url": None,
            "stream_prefix": prefix,
            "stream_shards": shards,
            **update,
        }
    )
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        ensure_database(url)
        apply_migrations(url)
        yield settings
    finally:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
        drop_database(name)


def device_of_shard(settings: Settings, shard: int, name: str = "dev") -> str:
    """A device key whose messages go to `shard` (the listener's crc32 of the device part)."""
    for n in range(10_000):
        device = f"{name}{n}"
        if stream_for_topic(f"devices/{device}/t", settings.stream_prefix, settings.stream_shards).endswith(
            f":{shard}"
        ):
            return device
    raise AssertionError(f"no device name for shard {shard}")


def xadd(
    settings: Settings, device: str, payload: bytes = b"21.5", at_ms: int | None = None, seq: int = 0
) -> int:
    """A reading of `device` in its shard's stream, as the listener writes it (at `at_ms` if given); its
    entry's milliseconds."""
    topic = f"devices/{device}/temperature"
    stream = stream_for_topic(topic, settings.stream_prefix, settings.stream_shards)
    rx_us = (at_ms * 1000) if at_ms is not None else time.time_ns() // 1000  # the reading's time
    fields = {"topic": topic, "payload": payload, "qos": "1", "retain": "0", "rx_us": str(rx_us + seq)}
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        entry = client.xadd(stream, fields, id=f"{at_ms}-{seq}" if at_ms is not None else "*")
    finally:
        client.close()
    return int(entry.split(b"-")[0])


def redis_ms(settings: Settings) -> int:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        seconds, micros = client.time()
    finally:
        client.close()
    return int(seconds) * 1000 + int(micros) // 1000
