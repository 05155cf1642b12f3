"""paho's `on_message`: a received message becomes a buffered stream entry, bytes untouched, unless its
device is over its limits.

Per-device limits (`device_limits`): a message over its device's rate or bytes rate, or with a topic
longer than 1,024 bytes, is not written. A QoS 1/2 one is acknowledged at once, in paho's thread on the
connection it arrived on, so the broker neither redelivers it nor holds a receive-maximum slot for it.
Such an ack can overtake the acks of earlier messages still being written (as a retried entry's can);
MQTT 5 asks for PUBACKs in arrival order [MQTT-4.6.0-2], Mosquitto matches them by packet id.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import paho.mqtt.client as mqtt

from ingest_listener.acks import AckGate
from ingest_listener.device_limits import (
    BYTES,
    MAX_TOPIC_BYTES,
    RATE,
    REASONS,
    TOPIC_TOO_LONG,
    DeviceLimiter,
    LimitLog,
    device_key,
)
from ingest_listener.metrics import ListenerMetrics
from ingest_listener.stream_writer import BufferedStreamWriter, entry_for_message, rx_now_us
from iot_core.settings import Settings


class MessageIntake:
    """Received messages into the writer's buffer, each counted by QoS; what is over the device limits is
    counted, noted for the log (`log`, at most a line per device a minute) and acknowledged instead.

    Runs in paho's thread only (and `flush_limit_log` once that thread is gone)."""

    def __init__(
        self,
        settings: Settings,
        writer: BufferedStreamWriter,
        metrics: ListenerMetrics,
        acks: AckGate,
        log: logging.Logger,
    ) -> None:
        self.settings = settings
        self._writer = writer
        self._acks = acks
        self._log = log
        self._qos_counters = {q: metrics.messages_received.labels(qos=str(q)) for q in (0, 1, 2)}
        self._limiter = DeviceLimiter(settings.device_max_msgs_per_s, settings.device_max_bytes_per_s)
        self._limit_log = LimitLog(
            {
                RATE: f"IOT_DEVICE_MAX_MSGS_PER_S={settings.device_max_msgs_per_s:g}",
                BYTES: f"IOT_DEVICE_MAX_BYTES_PER_S={settings.device_max_bytes_per_s}",
                TOPIC_TOO_LONG: f"topic longer than {MAX_TOPIC_BYTES} bytes",
            }
        )
        self._limit_log_at = 0.0  # when the limit log is next asked for lines that are due
        self._limited_counters = {r: metrics.messages_limited.labels(reason=r) for r in REASONS}

    def on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        rx_us = rx_now_us()
        try:
            try:
                topic: str | bytes = message.topic
            except UnicodeDecodeError:  # brokers reject such topics; keep the bytes if one slips through
                topic = message._topic
            self._qos_counters[message.qos].inc()
            if self._over_limit(topic, message):
                return
            s = self.settings
            entry = entry_for_message(
                topic,
                message.payload,
                message.qos,
                bool(message.retain),
                prefix=s.stream_prefix,
                shards=s.stream_shards,
                cluster=s.redis_cluster,
                rx_us=rx_us,
                mid=message.mid,
                generation=self._acks.generation,
                session=self._acks.session,
                redelivered=bool(message.dup),
            )
            self._writer.add(entry)
        except Exception:  # never kill paho's thread; an unbuffered QoS>0 message is redelivered
            self._log.exception("could not buffer a message (mid %s)", message.mid)

    def _over_limit(self, topic: str | bytes, message: mqtt.MQTTMessage) -> bool:
        """True for a message that is not written: over its device's limits or with a topic longer than
        `MAX_TOPIC_BYTES`. It is then counted, noted for the log and, at QoS 1/2, acknowledged."""
        now = time.monotonic()
        if now >= self._limit_log_at:
            self._limit_log_at = now + 1.0
            for line in self._limit_log.due(now):
                self._log.warning(line)
        too_long = len(message._topic) > MAX_TOPIC_BYTES
        if not too_long and not self._limiter.enabled:
            return False
        device = device_key(topic if isinstance(topic, str) else topic.decode("utf-8", "replace"))
        reason = TOPIC_TOO_LONG if too_long else self._limiter.check(device, len(message.payload), now)
        if reason is None:
            return False
        self._limited_counters[reason].inc()
        self._limit_log.record(device, reason, now)
        if message.qos:
            self._acks.ack_now(message.mid, message.qos)
        return True

    def flush_limit_log(self) -> None:
        """Log every line the limit log still holds (at stop)."""
        for line in self._limit_log.flush():
            self._log.warning(line)
