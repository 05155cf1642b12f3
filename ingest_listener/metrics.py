"""Prometheus metrics of one listener.

Each `Listener` owns its own `CollectorRegistry` (not the process-global default), so tests can run
several listeners in one process and read each one's counters without collisions.
"""

from __future__ import annotations

import errno
import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server

from iot_core.errors import PortInUseError

log = logging.getLogger(__name__)


class ListenerMetrics:
    """The listener's counters, gauges and histogram, registered in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.messages_received = Counter(
            "iot_listener_messages_received", "MQTT messages received, by QoS.", ["qos"], registry=r
        )
        self.entries_written = Counter(
            "iot_listener_entries_written", "Stream entries written (XADD succeeded).", registry=r
        )
        self.flushes = Counter("iot_listener_flushes", "Pipelined XADD flushes that succeeded.", registry=r)
        self.flush_duration = Histogram(
            "iot_listener_flush_duration_seconds",
            "Duration of one pipelined XADD flush.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.buffered = Gauge(
            "iot_listener_buffered_entries", "Entries received but not yet written to Redis.", registry=r
        )
        self.redis_errors = Counter(
            "iot_listener_redis_errors", "Failed Redis writes (whole flushes or single entries).", registry=r
        )
        self.redis_up = Gauge("iot_listener_redis_up", "1 while the last Redis write succeeded.", registry=r)
        self.mqtt_connects = Counter(
            "iot_listener_mqtt_connects",
            "Successful MQTT connections (the first one and reconnects).",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "iot_listener_mqtt_connected", "1 while connected to the broker.", registry=r
        )
        self.ready = Gauge(
            "iot_listener_ready", "1 while connected with the subscriptions in place.", registry=r
        )
        self.acks_sent = Counter(
            "iot_listener_acks_sent", "QoS 1/2 acknowledgements sent after the entry was written.", registry=r
        )
        self.acks_skipped = Counter(
            "iot_listener_acks_skipped",
            "Written QoS 1/2 entries not acknowledged because their connection is gone (broker redelivers).",
            registry=r,
        )
        self.messages_limited = Counter(
            "iot_listener_messages_limited",
            "Messages acknowledged but not written: over their device's rate (rate) or bytes rate (bytes), "
            "or a topic longer than 1,024 bytes (topic_too_long).",
            ["reason"],
            registry=r,
        )
        self.redis_up.set(1)

    def render(self) -> bytes:
        """The text exposition format, as served on /metrics."""
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample's current value (0.0 if absent); for tests and the status command."""
        got = self.registry.get_sample_value(name, labels or {})
        return float(got) if got is not None else 0.0


class MetricsServer:
    """`start_http_server` for one registry, with a way to shut it down again.

    It binds 127.0.0.1 unless told otherwise (`IOT_LISTENER_METRICS_HOST`, e.g. 0.0.0.0 in a container
    that Prometheus scrapes)."""

    def __init__(self, metrics: ListenerMetrics, port: int, addr: str = "127.0.0.1") -> None:
        self._metrics = metrics
        self._port = port
        self._addr = addr
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0 in tests)."""
        return int(self._server.server_port) if self._server is not None else self._port

    def start(self) -> None:
        try:
            self._server, self._thread = start_http_server(
                self._port, self._addr, registry=self._metrics.registry
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(self._addr, self._port, "IOT_LISTENER_METRICS_PORT") from exc
            raise
        log.info("metrics on http://%s:%d/metrics", self._addr, self.port)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
