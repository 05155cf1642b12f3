"""Fill a database through the pipeline: simulated messages as the listener writes them to Redis, then
the real sensor and micro-batch job until every entry is processed."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import redis
from dagster import DagsterInstance

from iot_core.settings import Settings
from simulator.messages import MessageFactory
from tests.support.pipeline import SensorDriver


def fill_through_the_pipeline(
    settings: Settings, messages: int, *, spread: timedelta = timedelta(0), timeout_s: float = 120
) -> None:
    """`messages` simulated messages of all three formats (a fifth of them bad). With `spread`, their
    arrivals are spaced evenly over that much time up to now (stream ids and `rx_us` set to match, device
    clocks too), so a dashboard has history to show; without it they all arrive now."""
    factory = MessageFactory(11, devices=3, bad_share=0.2)
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    now_ms = time.time_ns() // 1_000_000
    start_ms = now_ms - int(spread.total_seconds() * 1000)
    gap_ms = (now_ms - start_ms) / messages
    last = 0
    for i in range(messages):
        if spread:
            arrival_ms = max(int(start_ms + i * gap_ms), last + 1)
            entry_id: str = f"{arrival_ms}-0"
            device_clock = datetime.fromtimestamp(arrival_ms / 1000, UTC)
        else:
            entry_id, device_clock = "*", datetime.now(UTC)
        message = factory.next(device_clock)
        rx_us = arrival_ms * 1000 if spread else time.time_ns() // 1000
        entry = client.xadd(
            settings.stream_prefix,
            {
                "topic": message.topic,
                "payload": message.payload,
                "qos": "1",
                "retain": "0",
                "rx_us": str(rx_us),
            },
            id=entry_id,
        )
        last = int(entry.split(b"-")[0])
    with DagsterInstance.ephemeral() as instance:
        assert SensorDriver(settings, instance).drain(last, timeout_s=timeout_s)
