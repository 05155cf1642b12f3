"""The MQTT side of the listener: a persistent MQTT v5 session whose messages become stream entries.

Why it is built this way (at-least-once from broker to database):

- A persistent session (`clean_start=False`, `SessionExpiryInterval`) makes the broker queue messages
  while the listener is down; `ReceiveMaximum` bounds how many unacknowledged QoS 1/2 messages are in
  flight to us, which also bounds the buffer while Redis is down.
- `manual_ack=True`: a QoS 1/2 message is acknowledged only after its XADD succeeded (see
  `BufferedStreamWriter.on_written`). Until then the broker owns it and redelivers it if we die.
- Packet ids are only meaningful on the connection they arrived on: which written entry is acknowledged
  on which connection is `ingest_listener.acks`.
- Subscriptions live in the broker session: when the CONNACK says there is no session, we subscribe
  again (`iot-etl up` makes the session before anything publishes: `ingest_listener.session`). We also
  subscribe on the first connection of each process (so changed topic settings take effect), with "retain
  handling 1" so retained messages are not re-sent for existing subscriptions.
- A message becomes an entry in paho's thread (`ingest_listener.intake`), unless it is over its device's
  limits (`device_limits`): then it is not written, and a QoS 1/2 one is acknowledged at once.
- A failing connection is logged once per cause per period (`ingest_listener.connection_attempts`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ingest_listener.acks import AckGate
from ingest_listener.connection_attempts import ConnectionAttempts
from ingest_listener.device_limits import REASONS
from ingest_listener.intake import MessageIntake
from ingest_listener.metrics import ListenerMetrics, MetricsServer
from ingest_listener.paho_log import PAHO_LOG, PahoLogTap
from ingest_listener.session import session_properties, subscriptions
from ingest_listener.stream_writer import BufferedStreamWriter, StreamWriter
from iot_core.mqtt.client import current_connect_error, describe_connect_error, new_client
from iot_core.mqtt.endpoint import MqttEndpoint
from iot_core.mqtt.throttled_log import ThrottledLog
from iot_core.mqtt.tls import ClientTls
from iot_core.mqtt.wakeup import one_wakeup
from iot_core.redis_client import RedisClient, redis_client
from iot_core.settings import Settings
from iot_core.streams import stream_names

log = logging.getLogger(__name__)

RECONNECT_MIN_DELAY_S = 1
RECONNECT_MAX_DELAY_S = 30


def redis_client_for(settings: Settings) -> RedisClient:
    """The listener's Redis client: short timeouts and no hidden retries (the writer retries itself). A
    WAIT for the replicas may take its timeout, so the socket waits that much longer."""
    return redis_client(
        settings.listener_redis.get_secret_value(),
        settings.redis_mode,
        retries=0,
        socket_connect_timeout=2.0,
        socket_timeout=5.0 + settings.redis_wait_timeout_ms / 1000,
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

    def __init__(self, settings: Settings, *, redis_client: RedisClient | None = None) -> None:
        self.settings = settings
        self.metrics = ListenerMetrics()
        self._own_redis = redis_client is None
        self._redis = redis_client if redis_client is not None else redis_client_for(settings)
        self._acks = AckGate(lambda mid, qos: self.client.ack(mid, qos), self.metrics)
        self.writer = BufferedStreamWriter(
            StreamWriter(
                self._redis,
                wait_replicas=settings.wait_replicas,
                wait_timeout_ms=settings.redis_wait_timeout_ms,
            ),
            flush_count=settings.listener_flush_count,
            flush_ms=settings.listener_flush_ms,
            on_written=self._acks.ack_written,
            metrics=self.metrics,
        )
        self._metrics_server: MetricsServer | None = None
        if settings.listener_metrics_port:
            self._metrics_server = MetricsServer(
                self.metrics, settings.listener_metrics_port, settings.listener_metrics_host
            )

        self._connections = 0
        self._subscribe_mid: int | None = None

        self._ready = threading.Event()
        self._disconnected = threading.Event()
        self._stop_requested = threading.Event()
        self._stopping = False
        self._started = False
        self._stopped = False
        self._intake = MessageIntake(settings, self.writer, self.metrics, self._acks, log)
        self.client = self._make_client()
        self._acks.batch = lambda: one_wakeup(self.client)  # a written batch's acks wake paho's thread once

    # --- public API -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer, the metrics endpoint and the MQTT network loop (connects in background)."""
        if self._started:
            return
        s = self.settings
        if self._metrics_server is not None:
            self._metrics_server.start()  # first: a taken port fails start() before anything runs
        log.info(
            "listener %r: broker %s%s, topics %s at QoS %d -> streams %s (flush %d entries / %d ms)",
            s.listener_session_id,
            self.endpoint.address,
            f" (TLS, certificate {self.tls.cert})" if self.tls is not None else "",
            s.listener_filters,
            s.listener_qos,
            ", ".join(stream_names(s.stream_prefix, s.stream_shards, cluster=s.redis_cluster)),
            s.listener_flush_count,
            s.listener_flush_ms,
        )
        self._started = True
        self.writer.start()
        self.client.connect_async(
            self.endpoint.host,
            self.endpoint.port,
            keepalive=s.mqtt_keepalive_s,
            clean_start=False,
            properties=session_properties(s, s.listener_receive_maximum),
        )
        self.client.loop_start()
        if self.tls is not None and self.tls.cert is not None:
            threading.Thread(target=self._watch_certificate, name="listener-cert-watch", daemon=True).start()

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
            self._acks.connection_down()  # whatever happened above, no ack may follow the disconnect
            # 3. stragglers that arrived after step 1 are written too (not acked: redelivered later)
            left = self.writer.close(timeout=max(0.5, deadline - time.monotonic()))
            self._intake.flush_limit_log()
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
    # A failing connection (broker away, TLS refused, CONNACK refused) is logged once per cause per period.
    CONNECT_LOG_PERIOD_S = 60.0
    # How often the client certificate's files are compared with the certificate in use.
    CERT_WATCH_S = 5.0

    def _make_client(self) -> mqtt.Client:
        self.endpoint = MqttEndpoint.for_role(self.settings, "listener")
        self.tls = ClientTls.for_endpoint(self.endpoint)  # TlsFileError (one line) when a file is unusable
        self.connect_log = ThrottledLog(log, self.CONNECT_LOG_PERIOD_S)
        self._attempts = ConnectionAttempts(log, self.endpoint.address, self.connect_log)
        client = new_client(self.endpoint, self.settings.listener_session_id, manual_ack=True, tls=self.tls)
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_DELAY_S, max_delay=RECONNECT_MAX_DELAY_S)
        client.enable_logger(PahoLogTap(PAHO_LOG, self._attempts.socket_error))  # type: ignore[arg-type]
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._intake.on_message
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
            self._attempts.failed(f"the broker refused the connection: {reason_code}")
            return
        failed = self._attempts.connected()
        first = self._connections == 0
        self._acks.connection_up(flags.session_present)
        self._connections += 1
        self.metrics.mqtt_connects.inc()
        self.metrics.mqtt_connected.set(1)
        log.info(
            "connected to %s (connection %d, session present: %s%s%s)",
            self.endpoint.address,
            self._connections,
            flags.session_present,
            f", certificate serial {self.tls.serial:x}" if self.tls is not None and self.tls.serial else "",
            f", after {failed} failed attempts" if failed else "",
        )
        if not flags.session_present or first:
            self._subscribe(client, why="no session at the broker" if not flags.session_present else "start")
        else:
            self._set_ready()

    def _subscribe(self, client: mqtt.Client, why: str) -> None:
        topics = list(self.settings.listener_filters)
        if not topics:
            log.warning("no topics configured: nothing to subscribe to")
            self._set_ready()
            return
        rc, mid = client.subscribe(subscriptions(self.settings))
        if rc != mqtt.MQTT_ERR_SUCCESS:
            log.error("subscribe failed to go out: %s (will retry on reconnect)", mqtt.error_string(rc))
            return
        self._subscribe_mid = mid
        log.info("subscribing (%s) to %s at QoS %d", why, topics, self.settings.listener_qos)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        _userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        failed = [
            (topic, str(rc))
            for topic, rc in zip(self.settings.listener_filters, reason_codes, strict=False)
            if rc.is_failure
        ]
        if failed:
            log.error("broker refused subscriptions: %s", failed)
        else:
            granted = sorted({rc.value for rc in reason_codes})
            log.info("subscribed, granted QoS %s", granted)
        if mid == self._subscribe_mid:
            if self.settings.listener_group and not failed:
                self._drop_plain_filters(client)
            self._set_ready()

    def _drop_plain_filters(self, client: mqtt.Client) -> None:
        """A session that had the plain filters (this client id before it joined a group) would keep
        receiving every message through them beside its share: they go once the shared ones are granted,
        so no message falls between the two (removing filters the session never had changes nothing)."""
        rc, _mid = client.unsubscribe(list(self.settings.listener_topics))
        if rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("removing the plain subscriptions failed to go out: %s", mqtt.error_string(rc))

    def _set_ready(self) -> None:
        self._ready.set()
        self.metrics.ready.set(1)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        self._attempts.failed(describe_connect_error(current_connect_error()))

    def _on_pre_connect(self, _client: mqtt.Client, _userdata: Any) -> None:
        """Before each connection attempt (paho's thread): a new attempt, with a rotated certificate."""
        self._attempts.attempt()
        if self.tls is not None:
            self.tls.reload_if_changed()

    def _watch_certificate(self) -> None:
        """Every CERT_WATCH_S until stopped: when the client certificate was rotated on disk, end the
        connection so that paho's reconnect presents the new one at once (`_on_pre_connect` loads it).
        Nothing is lost: the session stays at the broker, which sends the unacknowledged QoS 1/2 messages
        again, and acks of the old connection are not sent on the new one (generations)."""
        assert self.tls is not None
        while not self._stop_requested.wait(self.CERT_WATCH_S):
            if self._stopping or not self._attempts.up or not self.tls.rotated_on_disk():
                continue
            sock = self.client.socket()
            if not isinstance(sock, socket.socket):
                continue
            log.info("client certificate %s was rotated: reconnecting with it", self.tls.cert)
            self._attempts.rotating = True
            # the plain socket's shutdown: the TLS object stays paho's, which sees the connection end
            # (OSError: already closed, paho reconnects anyway)
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        # Once this returns, no ack for the old connection can be queued any more (paho clears its
        # outgoing queue on reconnect, which happens after this callback).
        self._acks.connection_down()
        self._ready.clear()
        self.metrics.ready.set(0)
        self.metrics.mqtt_connected.set(0)
        self._disconnected.set()
        self._attempts.disconnected(reason_code, self._stopping)
