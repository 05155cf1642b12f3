"""What `iot-etl up` does for identity when IOT_SECURITY is on.

- Before anything starts: the CAs, the broker's certificate, the services' certificates and the simulated
  devices' certificates are issued where missing (`ensure_pki`).
- While it runs (`CrlWatch.poll`, from the supervisor's loop): the revocation list is re-signed at half-life
  (an expired one makes Mosquitto refuse every client), and a list changed by someone else (`iot-etl certs
  revoke` in another shell) is noticed. Mosquitto reads a new list on SIGHUP but only for new connections, so
  a revocation needs the broker restarted: open connections of the revoked certificate end there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from iot_core.pki_crl import crl_needs_refresh, crl_next_update, write_crl
from iot_core.pki_issue import init_pki, issue_device, issue_server, issue_service
from iot_core.pki_layout import SERVICE_ROLES, PkiLayout
from iot_core.settings import Settings

#: How often the supervisor's loop looks at the revocation list.
CRL_POLL_S = 1.0
#: `status` warns when the revocation list expires within this.
CRL_WARN_BEFORE = dt.timedelta(days=7)


def layout_of(settings: Settings) -> PkiLayout:
    return PkiLayout(settings.pki_dir.expanduser().resolve())


def server_sans(settings: Settings) -> list[str]:
    """Names the broker answers to: loopback, and the configured hosts of both listeners."""
    sans = ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    for host in (settings.mqtt_host, settings.mqtt_service_host):
        if host in ("0.0.0.0", "::", ""):
            continue
        try:
            entry = f"IP:{ipaddress.ip_address(host)}"
        except ValueError:
            entry = f"DNS:{host}"
        if entry not in sans:
            sans.append(entry)
    return sans


def ensure_pki(settings: Settings, device_ids: Iterable[str] = ()) -> list[str]:
    """Issue what is missing; one line per thing created (names and files, never keys)."""
    layout = layout_of(settings)
    lines = []
    if init_pki(layout, crl_days=settings.crl_days):
        lines.append("created the device CA and the service CA")
    if not layout.server_cert.exists():
        issue_server(layout, server_sans(settings))
        lines.append(f"issued the broker's certificate ({', '.join(server_sans(settings))})")
    issued = [role for role in SERVICE_ROLES if not layout.service(role)[0].exists()]
    for role in issued:
        issue_service(layout, role)
    if issued:
        lines.append(f"issued service certificates: {', '.join(issued)}")
    devices = [d for d in device_ids if not layout.device(d)[0].exists()]
    for device_id in devices:
        issue_device(layout, device_id)
    if devices:
        lines.append(f"issued {len(devices)} device certificate(s) for the simulated fleet")
    if crl_needs_refresh(layout):
        write_crl(layout, dt.timedelta(days=settings.crl_days))
        lines.append("re-signed the revocation list")
    return lines


class CrlChange(Enum):
    NONE = "none"
    RENEWED = "renewed"  # re-signed here at half-life: the broker reloads it (SIGHUP)
    CHANGED = "changed"  # changed by someone else (a revocation): the broker restarts


@dataclass
class CrlWatch:
    layout: PkiLayout
    crl_days: int
    _digest: str = field(init=False, default="")
    _next_check: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._digest = self._read_digest()

    def _read_digest(self) -> str:
        try:
            return hashlib.sha256(self.layout.crl.read_bytes()).hexdigest()
        except FileNotFoundError:
            return ""

    def poll(self) -> CrlChange:
        """At most once per CRL_POLL_S: what happened to the revocation list since the last call."""
        now = time.monotonic()
        if now < self._next_check:
            return CrlChange.NONE
        self._next_check = now + CRL_POLL_S
        digest = self._read_digest()
        if digest != self._digest:
            self._digest = digest
            return CrlChange.CHANGED
        if crl_needs_refresh(self.layout):
            write_crl(self.layout, dt.timedelta(days=self.crl_days))
            self._digest = self._read_digest()
            return CrlChange.RENEWED
        return CrlChange.NONE


def crl_warning(layout: PkiLayout, now: dt.datetime | None = None) -> str | None:
    """A line for `status` when the revocation list expires within a week (or has expired)."""
    ends = crl_next_update(layout)
    if ends is None:
        return None
    at = now or dt.datetime.now(dt.UTC)
    if ends <= at:
        return (
            f"the revocation list expired at {ends:%Y-%m-%d %H:%M} UTC: the broker refuses every client; "
            "run `iot-etl certs crl` and reload the broker"
        )
    if ends - at <= CRL_WARN_BEFORE:
        return (
            f"the revocation list expires at {ends:%Y-%m-%d %H:%M} UTC; `iot-etl up` re-signs it, or run "
            "`iot-etl certs crl` and reload the broker"
        )
    return None
