"""One connected MQTT v5 client that counts the broker's acknowledgements (a message is delivered only once
acknowledged), with backpressure while too many are unacknowledged.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from iot_core.mqtt.client import current_connect_error, describe_connect_error, new_client
from iot_core.mqtt.endpoint import MqttEndpoint
from iot_core.mqtt.wakeup import one_wakeup

# the package's logger: every MQTT client line logs under one name, iot_core.mqtt
log = logging.getLogger(__package__)

# paho queues without bound while the broker is slow or away; past this many unacknowledged messages
# the publisher waits instead of growing its memory
DEFAULT_MAX_UNACKED = 10_000
#: paho's own limit of QoS > 0 messages on the wire at once; beyond it paho sends the next one from its
#: network thread as each acknowledgement arrives
PAHO_MAX_INFLIGHT = 20
#: Messages `publish_many` hands to the client per wake-up of paho's network thread.
PUBLISH_CHUNK = 500


class PublishError(ConnectionError):
    """The broker cannot be reached or refused us; the message says which broker and why."""


class Publisher:
    """One connected MQTT v5 client that counts the broker's acknowledgements.

    A message counts as delivered only when the broker acknowledged it (PUBACK for QoS 1, PUBCOMP for
    QoS 2; for QoS 0 when it left the socket)."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id_prefix: str,
        *,
        max_unacked: int = DEFAULT_MAX_UNACKED,
        client_id: str | None = None,
        max_inflight: int = PAHO_MAX_INFLIGHT,
    ) -> None:
        """`client_id` is used as it is (a device connects under its own id); otherwise the client id is
        `client_id_prefix` with the process id and a random suffix. `max_inflight` 0 puts every message
        on the wire as it is published (`max_unacked` still bounds them). Raises TlsFileError when a TLS
        file of the endpoint cannot be used."""
        self.endpoint = endpoint
        self.client_id = client_id or f"{client_id_prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.max_unacked = max_unacked
        self.published = 0  # publish() calls accepted by the client
        self.acked = 0  # acknowledged with a success reason code
        self.failed = 0  # acknowledged with a failure reason code, or refused by the client
        self._done = threading.Condition()
        self._connected = threading.Event()
        self._last_error = ""
        self._client = new_client(self.endpoint, self.client_id)
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    # --- paho callbacks (network thread) -----------------------------------------------------------
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        if reason.is_failure:
            self._last_error = f"broker refused the connection: {reason}"
            return
        self._last_error = ""
        self._connected.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._last_error = describe_connect_error(current_connect_error())

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        was_up = self._connected.is_set()
        self._connected.clear()
        if not reason.is_failure:
            return
        if was_up:
            self._last_error = f"disconnected: {reason}"
            log.warning(
                "%s lost the broker at %s (%s); reconnecting", self.client_id, self.endpoint.address, reason
            )
        elif (
            not self._last_error
        ):  # TLS 1.3: a refused client certificate ends the connection after the handshake
            self._last_error = (
                "the broker closed the connection before accepting it (does it refuse this client's "
                "certificate? see the broker's log)"
            )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        with self._done:
            if reason.is_failure:  # "no matching subscribers" is a success code
                self.failed += 1
            else:
                self.acked += 1
            self._done.notify_all()

    # --- lifecycle ---------------------------------------------------------------------------------
    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect and start the network thread; raises PublishError if not connected within the timeout."""
        where = f"{self.endpoint.host}:{self.endpoint.port}"
        try:
            self._client.connect(
                self.endpoint.host, self.endpoint.port, keepalive=self.endpoint.keepalive_s, clean_start=True
            )
        except ssl.SSLError as exc:
            raise PublishError(
                f"no TLS session with the MQTT broker at {where} for {self.client_id}: "
                f"{describe_connect_error(exc)}"
            ) from exc
        except OSError as exc:
            raise PublishError(
                f"cannot reach the MQTT broker at {where}: {exc} "
                "(is it running? see IOT_MQTT_HOST/IOT_MQTT_PORT)"
            ) from exc
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            self._client.loop_stop()
            reason = self._last_error or "no CONNACK"
            raise PublishError(
                f"no MQTT session with {where} after {timeout_s:.0f} s: {reason} "
                "(check IOT_MQTT_* credentials and TLS settings)"
            )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Publisher:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- publishing --------------------------------------------------------------------------------
    @property
    def unacked(self) -> int:
        return self.published - self.acked - self.failed

    def publish(self, topic: str, payload: bytes, qos: int, stop: threading.Event | None = None) -> bool:
        """Hand one message to the client; False if `stop` was set while waiting to do so.

        Waits while too many messages are unacknowledged (backpressure), and for QoS 0 while disconnected
        (paho queues only QoS > 0 across a disconnect; a QoS 0 message would be lost).
        """
        if not self._wait_for_room(1, stop):
            return False
        while qos == 0 and not self._connected.wait(1.0):
            if stop is not None and stop.is_set():
                return False
            log.info(
                "%s waiting for the broker at %s:%s", self.client_id, self.endpoint.host, self.endpoint.port
            )
        info = self._client.publish(topic, payload, qos=qos)
        # QoS > 0 without a connection is queued and sent on reconnect; anything else that is not
        # success (QoS 0 lost in a disconnect, a full queue) will never be acknowledged
        lost = info.rc != mqtt.MQTT_ERR_SUCCESS and not (qos > 0 and info.rc == mqtt.MQTT_ERR_NO_CONN)
        with self._done:
            self.published += 1
            if lost:
                self.failed += 1
                self._done.notify_all()
        return True

    def publish_many(self, messages: Sequence[tuple[str, bytes]], qos: int) -> None:
        """Hand many (topic, payload) messages to the client, `PUBLISH_CHUNK` per wake-up of paho's
        network thread (`wakeup.one_wakeup`) rather than one each. Each chunk waits for room under
        `max_unacked` before it starts, so that no publish waits while the wake-ups are held back."""
        for start in range(0, len(messages), PUBLISH_CHUNK):
            chunk = messages[start : start + PUBLISH_CHUNK]
            self._wait_for_room(min(len(chunk), self.max_unacked), None)
            with one_wakeup(self._client):
                for topic, payload in chunk:
                    self.publish(topic, payload, qos)

    def _wait_for_room(self, count: int, stop: threading.Event | None) -> bool:
        """Wait until `count` more messages keep the unacknowledged within `max_unacked`; False if `stop`
        was set meanwhile."""
        with self._done:
            while self.unacked + count > self.max_unacked:
                if stop is not None and stop.is_set():
                    return False
                self._done.wait(0.5)
        return True

    def wait_for_acks(self, timeout_s: float) -> bool:
        """True when every published message was acknowledged (or failed) within the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._done:
            while self.unacked > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done.wait(min(left, 0.5))
        return True
