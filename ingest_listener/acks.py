"""Which written QoS 1/2 messages the listener acknowledges, and on which connection.

Packet ids are only meaningful on the connection they arrived on. Each connection gets a new *generation*;
an entry written after its connection is gone is not acknowledged with its stale id (the broker redelivers
it; the duplicate is acceptable). QoS 2 flows are different: paho sends PUBREC on receipt, after which the
broker only repeats PUBREL, never the message; their PUBCOMP is therefore still sent on a later connection
as long as the broker session is the same one.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from ingest_listener.metrics import ListenerMetrics
from ingest_listener.stream_writer import Entry


class AckGate:
    """The connection state acknowledgements depend on, under one lock.

    `generation` and `session` are written in paho's thread (`connection_up`) and read there (when a
    message arrives); the writer's thread reads them under the lock together with `connected`, so once
    `connection_down` returns no ack for the old connection can be queued any more.
    """

    def __init__(self, ack: Callable[[int, int], object], metrics: ListenerMetrics) -> None:
        self._ack = ack  # sends the acknowledgement of (packet id, QoS)
        #: Around the acks of one written batch (the listener's: `iot_core.mqtt.wakeup.one_wakeup`).
        self.batch: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext
        self._metrics = metrics
        self._lock = threading.Lock()
        self._connected = False
        self.generation = 0
        self.session = 0

    def connection_up(self, session_present: bool) -> None:
        """A connection was accepted: a new generation, and a new session unless the broker kept ours."""
        with self._lock:
            self.generation += 1
            if not session_present:
                self.session += 1
            self._connected = True

    def connection_down(self) -> None:
        """No ack may follow: the connection is gone (or about to be)."""
        with self._lock:
            self._connected = False

    def ack_now(self, mid: int, qos: int) -> None:
        """Acknowledge a message at once, from paho's thread, which runs the connection callbacks too: the
        connection is the one it arrived on."""
        with self._lock:
            if self._connected:
                self._ack(mid, qos)

    def ack_written(self, entries: list[Entry]) -> None:
        """Acknowledge the written QoS 1/2 entries whose connection (or QoS 2 session) is current."""
        sent = skipped = 0
        ack = self._ack
        with self._lock, self.batch():
            connected, generation, session = self._connected, self.generation, self.session
            for entry in entries:
                if entry.qos == 0:
                    continue
                current = entry.generation == generation or (entry.qos == 2 and entry.session == session)
                if connected and current:
                    ack(entry.mid, entry.qos)
                    sent += 1
                else:
                    skipped += 1
        if sent:
            self._metrics.acks_sent.inc(sent)
        if skipped:
            self._metrics.acks_skipped.inc(skipped)
