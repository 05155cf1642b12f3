"""The TLS side of an MQTT client: the broker verified, a client certificate presented and, once rotated on
disk, taken up before the next (re)connect without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
from pathlib import Path

from iot_core.errors import UserFacingError
from iot_core.mqtt.endpoint import MqttEndpoint
from iot_core.pki_errors import PkiError
from iot_core.pki_pair import check_cert_and_key

# the package's logger: every MQTT client line logs under one name, iot_core.mqtt
log = logging.getLogger(__package__)


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
