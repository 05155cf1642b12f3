"""MQTT for every part: one client builder (MQTT v5, TLS, credentials), the endpoint each service role
connects to, and one publisher that counts the broker's acknowledgements."""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from iot_core.errors import UserFacingError
from iot_core.pki_errors import PkiError
from iot_core.pki_layout import SERVICE_ROLES, PkiLayout
from iot_core.pki_pair import check_cert_and_key
from iot_core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    keepalive_s: int = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> MqttEndpoint:
        return cls(
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            username=settings.mqtt_username,
            password=settings.mqtt_password.get_secret_value() if settings.mqtt_password else None,
            tls_ca=settings.mqtt_tls_ca,
            tls_cert=settings.mqtt_tls_cert,
            tls_key=settings.mqtt_tls_key,
            keepalive_s=settings.mqtt_keepalive_s,
        )

    @classmethod
    def for_role(cls, settings: Settings, role: str) -> MqttEndpoint:
        """Where and how a service of `role` (listener, publisher, simulator, ops) connects.

        With `IOT_SECURITY` on: the service listener (`IOT_MQTT_SERVICE_HOST:IOT_MQTT_SERVICE_PORT`),
        trusting the PKI's `ca-chain.pem`, with the role's service certificate `services/<role>.pem`;
        `IOT_MQTT_TLS_CA` and `IOT_MQTT_TLS_CERT`/`IOT_MQTT_TLS_KEY` (a pair) win when set. Off: the
        plain settings (`from_settings`).
        """
        if role not in SERVICE_ROLES:
            raise ValueError(f"MQTT role {role!r} is not one of {', '.join(SERVICE_ROLES)}")
        plain = cls.from_settings(settings)
        if not settings.security:
            return plain
        layout = PkiLayout(settings.pki_dir)
        cert, key = layout.service(role)
        if settings.mqtt_tls_cert is not None:
            cert, key = settings.mqtt_tls_cert, settings.mqtt_tls_key  # no key: the key is in the cert file
        return cls(
            host=settings.mqtt_service_host,
            port=settings.mqtt_service_port,
            username=plain.username,
            password=plain.password,
            tls_ca=settings.mqtt_tls_ca or layout.ca_chain,
            tls_cert=cert,
            tls_key=key,
            keepalive_s=plain.keepalive_s,
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class TlsFileError(UserFacingError):
    """A CA, certificate or key file of an MQTT client cannot be used (missing, not PEM, key mismatch)."""


def _issue_hint(cert: Path) -> str:
    """What to do about a missing or bad client certificate, by where it lives in the PKI."""
    if cert.parent.name == "services":
        return f"issue it with `iot-etl certs service {cert.stem}`"
    if cert.parent.name == "devices":
        return f"issue it with `iot-etl certs device {cert.stem}`"
    return "check IOT_MQTT_TLS_CERT and IOT_MQTT_TLS_KEY"


class ClientTls:
    """The TLS side of one MQTT client: verifies the broker against `ca` (hostname included), presents
    `cert`/`key`, and takes up a certificate rotated on disk before each (re)connect.

    The context is shared with paho; `reload_if_changed()` loads a changed pair into the SAME context
    (paho calls it before every connection attempt, see `new_client`), so the next handshake uses it.
    A pair that does not verify (half written: new key, old certificate; missing; not PEM) is not
    loaded: the chain in use stays and one line is logged per distinct content.
    """

    def __init__(self, ca: Path, cert: Path | None = None, key: Path | None = None) -> None:
        self.ca, self.cert, self.key = Path(ca), cert, key
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            self.context.load_verify_locations(cafile=str(self.ca))
        except (OSError, ssl.SSLError) as exc:
            raise TlsFileError(
                f"CA file {self.ca} cannot be used ({getattr(exc, 'strerror', None) or exc})",
                "run `iot-etl certs init` or check IOT_MQTT_TLS_CA",
            ) from None
        self.serial: int | None = None  # of the certificate in use
        self.reloads = 0  # certificates loaded after the first
        self._lock = threading.Lock()
        self._loaded: bytes | None = None  # digest of the pair in use
        self._refused: bytes | None = None  # digest of the last pair that did not verify (logged once)
        if self.cert is not None:
            digest = self._digest()
            problem = self._load(digest)
            if problem is not None:
                raise TlsFileError(
                    f"client certificate {self.cert} cannot be used: {problem}", _issue_hint(self.cert)
                )

    @classmethod
    def for_endpoint(cls, endpoint: MqttEndpoint) -> ClientTls | None:
        if endpoint.tls_ca is None:
            return None
        return cls(endpoint.tls_ca, endpoint.tls_cert, endpoint.tls_key)

    def _digest(self) -> bytes | None:
        """The current content of cert and key on disk (None when unreadable)."""
        if self.cert is None:
            return None
        h = hashlib.sha256()
        try:
            for path in (self.cert, self.key):
                if path is not None:
                    h.update(Path(path).read_bytes())
                    h.update(b"\0")
        except OSError:
            return None
        return h.digest()

    def _load(self, digest: bytes | None) -> str | None:
        """Load the pair on disk into the context; why not (None when loaded)."""
        assert self.cert is not None
        try:
            cert = check_cert_and_key(self.cert, self.key or self.cert)
            self.context.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
        except PkiError as exc:
            return str(exc)
        except (OSError, ssl.SSLError) as exc:
            return getattr(exc, "strerror", None) or str(exc)
        # changed again while loading: the next check loads it once more
        self._loaded = digest if digest is not None and digest == self._digest() else None
        self.serial = cert.serial_number
        return None

    def rotated_on_disk(self) -> bool:
        """Whether the files now hold a usable pair other than the one in use (nothing is loaded)."""
        if self.cert is None:
            return False
        with self._lock:
            digest = self._digest()
            if digest is None or digest in (self._loaded, self._refused):
                return False
            try:
                check_cert_and_key(self.cert, self.key or self.cert)
            except PkiError as exc:
                self._refuse(digest, str(exc))
                return False
            return True

    def reload_if_changed(self) -> bool:
        """Load the pair on disk if it changed and verifies; True when a new certificate is in use.

        Never raises: runs in paho's thread before each connection attempt."""
        if self.cert is None:
            return False
        with self._lock:
            digest = self._digest()
            if digest is None or digest in (self._loaded, self._refused):
                return False
            old = self.serial
            problem = self._load(digest)
            if problem is not None:
                self._refuse(digest, problem)
                return False
            self.reloads += 1
            log.info(
                "client certificate %s reloaded (serial %x, was %x)", self.cert, self.serial or 0, old or 0
            )
            return True

    def _refuse(self, digest: bytes, problem: str) -> None:
        if digest != self._refused:
            self._refused = digest
            log.warning(
                "client certificate %s changed on disk but cannot be used (%s); keeping serial %x",
                self.cert,
                problem,
                self.serial or 0,
            )


def new_client(
    endpoint: MqttEndpoint, client_id: str, *, manual_ack: bool = False, tls: ClientTls | None = None
) -> mqtt.Client:
    """A configured, not yet connected MQTT v5 client.

    With TLS (`endpoint.tls_ca`, or `tls` given), the client certificate is re-read before every
    connection attempt, so a certificate rotated on disk is used from the next (re)connect on.
    """
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    tls = tls or ClientTls.for_endpoint(endpoint)
    if tls is not None:
        client.tls_set_context(tls.context)
        # paho 2.2 calls on_pre_connect in reconnect(), before it opens the socket: on the first
        # connect and on each automatic reconnect of its loop
        client.on_pre_connect = lambda _client, _userdata: tls.reload_if_changed()
    return client


def describe_connect_error(exc: BaseException | None) -> str:
    """Why a connection attempt failed, in words (the TLS reason when there is one)."""
    if exc is None:
        return "connection failed"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the broker's certificate does not verify: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if "ALERT" in reason:  # the broker's answer to our certificate
            return (
                f"the broker refused this client's certificate ({reason}): is it issued by the CA the broker "
                "trusts for this port, valid and not revoked?"
            )
        return f"TLS failed ({reason}): is this the broker's TLS port?"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def current_connect_error() -> BaseException | None:
    """The exception of a failed connection attempt, inside paho's `on_connect_fail`: paho calls it from
    the `except OSError` block around the attempt, so it is the exception being handled."""
    return sys.exc_info()[1]


class ThrottledLog:
    """At most one line per cause every `period_s`, saying how often it happened since its last line."""

    def __init__(self, logger: logging.Logger, period_s: float = 60.0) -> None:
        self.logger = logger
        self.period_s = period_s
        self._lock = threading.Lock()
        self._causes: dict[str, tuple[int, float]] = {}  # cause -> (count since its last line, last line at)
        self.total = 0  # occurrences since the last reset()

    def note(self, cause: str, line: str, level: int = logging.WARNING) -> bool:
        """Count one occurrence of `cause`; log `line` and the count when its period is over (then True)."""
        now = time.monotonic()
        with self._lock:
            self.total += 1
            count, last = self._causes.get(cause, (0, -1.0))
            count += 1
            if last >= 0 and now - last < self.period_s:
                self._causes[cause] = (count, last)
                return False
            self._causes[cause] = (0, now)
        times = "1 attempt" if count == 1 else f"{count} attempts since the last such line"
        self.logger.log(level, "%s (%s; retrying)", line, times)
        return True

    def reset(self) -> int:
        """Forget every cause (the next occurrence is logged at once); returns how many were counted."""
        with self._lock:
            total, self.total = self.total, 0
            self._causes.clear()
        return total


# paho queues without bound while the broker is slow or away; past this many unacknowledged messages
# the publisher waits instead of growing its memory
DEFAULT_MAX_UNACKED = 10_000


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
    ) -> None:
        """`client_id` is used as it is (a device connects under its own id); otherwise the client id is
        `client_id_prefix` with the process id and a random suffix. Raises TlsFileError when a TLS file
        of the endpoint cannot be used."""
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
        with self._done:
            while self.unacked >= self.max_unacked:
                if stop is not None and stop.is_set():
                    return False
                self._done.wait(0.5)
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
