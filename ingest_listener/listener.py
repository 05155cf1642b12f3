"""The MQTT side of the listener: a persistent MQTT v5 session whose messages become stream entries.

Why it is built this way (at-least-once from broker to database):

- A persistent session (`clean_start=False`, `SessionExpiryInterval`) makes the broker queue messages
  while the listener is down; `ReceiveMaximum` bounds how many unacknowledged QoS 1/2 messages are in
  flight to us, which also bounds the buffer while Redis is down.
- `manual_ack=True`: a QoS 1/2 message is acknowledged only after its XADD succeeded (see
  `BufferedStreamWriter.on_written`). Until then the broker owns it and redelivers it if we die.
- Packet ids are only meaningful on the connection they arrived on. Each connection gets a new
  *generation*; an entry written after its connection is gone is not acknowledged with its stale id
  (the broker redelivers it; the duplicate is acceptable). QoS 2 flows are different: paho sends
  PUBREC on receipt, after which the broker only repeats PUBREL, never the message; their PUBCOMP is
  therefore still sent on a later connection as long as the broker session is the same one.
- Subscriptions live in the broker session: when the CONNACK says there is no session, we subscribe
  again. We also subscribe on the first connection of each process (so changed topic settings take
  effect), with "retain handling 1" so retained messages are not re-sent for existing subscriptions.
- Per-device limits (`device_limits`): a message over its device's rate or bytes rate, or with a topic
  longer than 1,024 bytes, is not written. A QoS 1/2 one is acknowledged at once, in paho's thread on the
  connection it arrived on, so the broker neither redelivers it nor holds a receive-maximum slot for it.
  Such an ack can overtake the acks of earlier messages still being written (as a retried entry's can);
  MQTT 5 asks for PUBACKs in arrival order [MQTT-4.6.0-2], Mosquitto matches them by packet id.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
import redis
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from redis.backoff import NoBackoff
from redis.retry import Retry

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
from ingest_listener.metrics import ListenerMetrics, MetricsServer
from ingest_listener.stream_writer import (
    BufferedStreamWriter,
    Entry,
    StreamWriter,
    entry_for_message,
    rx_now_us,
)
from iot_core.mqtt import MqttEndpoint, new_client
from iot_core.settings import Settings
from iot_core.streams import stream_names

log = logging.getLogger(__name__)

RECONNECT_MIN_DELAY_S = 1
RECONNECT_MAX_DELAY_S = 30
PAHO_LOG = logging.getLogger("ingest_listener.paho")


def _drop_not_connected_noise(record: logging.LogRecord) -> bool:
    """paho's loop logs "Client is not connected" as an ERROR whenever it spins without a socket
    (broker unreachable, or right after our own DISCONNECT). We log those situations ourselves, in
    words an operator can act on; this one is noise."""
    return not str(record.msg).startswith("Client is not connected")


PAHO_LOG.addFilter(_drop_not_connected_noise)


def redis_client_for(settings: Settings) -> redis.Redis:
    """The listener's Redis client: short timeouts and no hidden retries (the writer retries itself)."""
    return redis.Redis.from_url(
        settings.listener_redis.get_secret_value(),
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        retry=Retry(NoBackoff(), 0),
        client_name="iot-etl-listener",
    )


class Listener:
    """MQTT -> Redis streams. `start()` returns at once; `stop()` flushes, acks and disconnects.

    Usable from tests in a thread-free way (paho and the writer run their own threads)::

        listener = Listener(settings)
        listener.start()
        assert listener.wait_ready(10)   # connected and subscribed
        ...
        listener.stop()                  # -> number of entries that could not be written (0)

    or as a context manager (`with Listener(settings) as listener: ...`). `run()` blocks until
    `request_stop()` (e.g. from a signal handler) and then stops.
    """

    def __init__(self, settings: Settings, *, redis_client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.metrics = ListenerMetrics()
        self._own_redis = redis_client is None
        self._redis = redis_client if redis_client is not None else redis_client_for(settings)
        self.writer = BufferedStreamWriter(
            StreamWriter(self._redis),
            flush_count=settings.listener_flush_count,
            flush_ms=settings.listener_flush_ms,
            on_written=self._ack_written,
            metrics=self.metrics,
        )
        self._metrics_server: MetricsServer | None = None
        if settings.listener_metrics_port:
            self._metrics_server = MetricsServer(
                self.metrics, settings.listener_metrics_port, settings.listener_metrics_host
            )

        # Connection state. `_generation`/`_session` are written in paho's thread (on_connect) and read
        # there (on_message); the ack path reads them under `_ack_lock` together with `_connected`.
        self._ack_lock = threading.Lock()
        self._connected = False
        self._generation = 0
        self._session = 0
        self._connections = 0
        self._subscribe_mid: int | None = None

        self._ready = threading.Event()
        self._disconnected = threading.Event()
        self._stop_requested = threading.Event()
        self._stopping = False
        self._started = False
        self._stopped = False
        self._qos_counters = {q: self.metrics.messages_received.labels(qos=str(q)) for q in (0, 1, 2)}
        # Limits: used in paho's thread only (and by stop() once that thread is gone).
        self._limiter = DeviceLimiter(settings.device_max_msgs_per_s, settings.device_max_bytes_per_s)
        self._limit_log = LimitLog(
            {
                RATE: f"IOT_DEVICE_MAX_MSGS_PER_S={settings.device_max_msgs_per_s:g}",
                BYTES: f"IOT_DEVICE_MAX_BYTES_PER_S={settings.device_max_bytes_per_s}",
                TOPIC_TOO_LONG: f"topic longer than {MAX_TOPIC_BYTES} bytes",
            }
        )
        self._limit_log_at = 0.0  # when the limit log is next asked for lines that are due
        self._limited_counters = {r: self.metrics.messages_limited.labels(reason=r) for r in REASONS}
        self.client = self._make_client()

    # --- public API -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer, the metrics endpoint and the MQTT network loop (connects in background)."""
        if self._started:
            return
        s = self.settings
        if self._metrics_server is not None:
            self._metrics_server.start()  # first: a taken port fails start() before anything runs
        log.info(
            "listener %r: broker %s:%d, topics %s at QoS %d -> streams %s (flush %d entries / %d ms)",
            s.listener_client_id,
            s.mqtt_host,
            s.mqtt_port,
            s.listener_topics,
            s.listener_qos,
            ", ".join(stream_names(s.stream_prefix, s.stream_shards)),
            s.listener_flush_count,
            s.listener_flush_ms,
        )
        self._started = True
        self.writer.start()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = s.listener_session_expiry_s
        properties.ReceiveMaximum = s.listener_receive_maximum
        self.client.connect_async(
            s.mqtt_host, s.mqtt_port, keepalive=s.mqtt_keepalive_s, clean_start=False, properties=properties
        )
        self.client.loop_start()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Wait until connected with the subscriptions in place (granted, or kept by the session)."""
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def connections(self) -> int:
        """Successful MQTT connections so far (1 + reconnects)."""
        return self._connections

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_server.port if self._metrics_server is not None else None

    def request_stop(self) -> None:
        """Ask `run()` to stop (safe to call from a signal handler)."""
        self._stop_requested.set()

    def run(self) -> int:
        """Start, block until `request_stop()`, stop. Returns the number of unwritten entries."""
        self.start()
        while not self._stop_requested.wait(1.0):
            pass
        log.info("stop requested")
        return self.stop()

    def stop(self, timeout: float = 5.0) -> int:
        """Flush everything, acknowledge it, disconnect (the broker keeps the session), stop threads.

        Returns how many entries could not be written because Redis stayed unreachable for `timeout`
        (their QoS 1/2 messages are not acknowledged, so the broker redelivers them later).
        """
        if self._stopped:
            return 0
        self._stopped = True
        self._stopping = True
        self._stop_requested.set()
        deadline = time.monotonic() + timeout
        left = 0
        if self._started:
            # 1. write what we have and ack it while the connection that can ack it is still up
            if not self.writer.drain(timeout=max(0.1, deadline - time.monotonic())):
                log.warning("Redis did not take the buffer before disconnecting; those stay unacknowledged")
            # 2. DISCONNECT goes out after the acks queued above; the session stays at the broker
            self._disconnected.clear()
            if self.client.disconnect() == mqtt.MQTT_ERR_SUCCESS:
                self._disconnected.wait(max(0.5, min(3.0, deadline - time.monotonic())))
            self.client.loop_stop()
            with self._ack_lock:
                self._connected = False  # whatever happened above, no ack may follow the disconnect
            # 3. stragglers that arrived after step 1 are written too (not acked: redelivered later)
            left = self.writer.close(timeout=max(0.5, deadline - time.monotonic()))
            for line in self._limit_log.flush():
                log.warning(line)
            if self._metrics_server is not None:
                self._metrics_server.stop()
        if self._own_redis:
            self._redis.close()
        m = self.metrics
        log.info(
            "listener stopped: %d messages received, %d entries written, %d acks sent, %d left unwritten, "
            "%d over the device limits",
            int(sum(m.value("iot_listener_messages_received_total", {"qos": str(q)}) for q in (0, 1, 2))),
            int(m.value("iot_listener_entries_written_total")),
            int(m.value("iot_listener_acks_sent_total")),
            left,
            int(sum(m.value("iot_listener_messages_limited_total", {"reason": r}) for r in REASONS)),
        )
        return left

    def __enter__(self) -> Listener:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- MQTT client ------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        client = new_client(
            MqttEndpoint.from_settings(self.settings), self.settings.listener_client_id, manual_ack=True
        )
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_DELAY_S, max_delay=RECONNECT_MAX_DELAY_S)
        client.enable_logger(PAHO_LOG)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s (retrying)", reason_code)
            return
        first = self._connections == 0
        with self._ack_lock:
            self._generation += 1
            if not flags.session_present:
                self._session += 1
            self._connected = True
        self._connections += 1
        self.metrics.mqtt_connects.inc()
        self.metrics.mqtt_connected.set(1)
        log.info(
            "connected to %s:%d (connection %d, session present: %s)",
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            self._connections,
            flags.session_present,
        )
        if not flags.session_present or first:
            self._subscribe(client, why="no session at the broker" if not flags.session_present else "start")
        else:
            self._set_ready()

    def _subscribe(self, client: mqtt.Client, why: str) -> None:
        topics = list(self.settings.listener_topics)
        if not topics:
            log.warning("no topics configured: nothing to subscribe to")
            self._set_ready()
            return
        options = SubscribeOptions(
            qos=self.settings.listener_qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
        )
        rc, mid = client.subscribe([(topic, options) for topic in topics])
        if rc != mqtt.MQTT_ERR_SUCCESS:
            log.error("subscribe failed to go out: %s (will retry on reconnect)", mqtt.error_string(rc))
            return
        self._subscribe_mid = mid
        log.info("subscribing (%s) to %s at QoS %d", why, topics, self.settings.listener_qos)

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        failed = [
            (topic, str(rc))
            for topic, rc in zip(self.settings.listener_topics, reason_codes, strict=False)
            if rc.is_failure
        ]
        if failed:
            log.error("broker refused subscriptions: %s", failed)
        else:
            granted = sorted({rc.value for rc in reason_codes})
            log.info("subscribed, granted QoS %s", granted)
        if mid == self._subscribe_mid:
            self._set_ready()

    def _set_ready(self) -> None:
        self._ready.set()
        self.metrics.ready.set(1)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        log.warning(
            "cannot connect to the broker at %s:%d (retrying)",
            self.settings.mqtt_host,
            self.settings.mqtt_port,
        )

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        # Under the ack lock: once this returns, no ack for the old connection can be queued any more
        # (paho clears its outgoing queue on reconnect, which happens after this callback).
        with self._ack_lock:
            self._connected = False
        self._ready.clear()
        self.metrics.ready.set(0)
        self.metrics.mqtt_connected.set(0)
        self._disconnected.set()
        if not self._stopping:
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
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
                rx_us=rx_us,
                mid=message.mid,
                generation=self._generation,
                session=self._session,
            )
            self.writer.add(entry)
        except Exception:  # never kill paho's thread; an unbuffered QoS>0 message is redelivered
            log.exception("could not buffer a message (mid %s)", message.mid)

    def _over_limit(self, topic: str | bytes, message: mqtt.MQTTMessage) -> bool:
        """True for a message that is not written: over its device's limits or with a topic longer than
        `MAX_TOPIC_BYTES`. It is then counted, noted for the log and, at QoS 1/2, acknowledged."""
        now = time.monotonic()
        if now >= self._limit_log_at:
            self._limit_log_at = now + 1.0
            for line in self._limit_log.due(now):
                log.warning(line)
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
            with self._ack_lock:  # this thread runs on_connect/on_disconnect: the connection is this one
                if self._connected:
                    self.client.ack(message.mid, message.qos)
        return True

    # --- acknowledgements (writer thread) ---------------------------------------------------------
    def _ack_written(self, entries: list[Entry]) -> None:
        """Acknowledge the written QoS 1/2 entries whose connection (or QoS 2 session) is current."""
        sent = skipped = 0
        with self._ack_lock:
            connected, generation, session = self._connected, self._generation, self._session
            for entry in entries:
                if entry.qos == 0:
                    continue
                current = entry.generation == generation or (entry.qos == 2 and entry.session == session)
                if connected and current:
                    self.client.ack(entry.mid, entry.qos)
                    sent += 1
                else:
                    skipped += 1
        if sent:
            self.metrics.acks_sent.inc(sent)
        if skipped:
            self.metrics.acks_skipped.inc(skipped)
