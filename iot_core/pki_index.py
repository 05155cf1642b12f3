"""The index of issued certificates (`index.json`): which entry a name or serial means, where an entry's
files are, and the listing `iot-etl certs list` shows.

An entry's `file` is its certificate's path relative to the PKI root: the name's own path while it is
current, `NAME.<serial>.pem` once a newer one took its place, None once removed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iot_core.pki_errors import PkiError
from iot_core.pki_files import require_init
from iot_core.pki_layout import PkiLayout, service_cn
from iot_core.pki_x509 import utc_now


@dataclass(frozen=True)
class CertInfo:
    """One certificate of the index, as `iot-etl certs list` shows it."""

    serial: str  # lowercase hex, no separators
    kind: str  # device | service | server
    name: str  # device id, service name, or "server"
    role: str  # "device", a service role, or "server"
    not_before: dt.datetime
    not_after: dt.datetime
    revoked_at: dt.datetime | None
    path: Path | None  # where the certificate is now; None once removed (`rotate --revoke-old`)
    current: bool  # the certificate at the name's own path (not a rotated-away one)

    def status(self, now: dt.datetime | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.not_after <= (now or utc_now()):
            return "expired"
        return "valid" if self.current else "valid, replaced"


def serial_hex(serial: int) -> str:
    return f"{serial:x}"


def parse_serial(text: str) -> int | None:
    digits = text.strip().lower().removeprefix("0x").replace(":", "")
    if not digits or not re.fullmatch(r"[0-9a-f]+", digits):
        return None
    return int(digits, 16)


def relative_to_root(layout: PkiLayout, path: Path) -> str:
    """`path` as an index entry's `file` names it."""
    return str(path.relative_to(layout.root))


def own_paths(layout: PkiLayout, kind: str, name: str) -> tuple[Path, Path]:
    """The certificate and key paths of a name (those of its current certificate)."""
    if kind == "device":
        return layout.device(name)
    if kind == "service":
        return layout.service(name)
    return layout.server()


def current_entry(layout: PkiLayout, index: dict[str, Any], kind: str, name: str) -> dict[str, Any] | None:
    """The entry of the certificate at the name's own paths; None when it has none."""
    rel = relative_to_root(layout, own_paths(layout, kind, name)[0])
    for entry in index["certs"]:
        if entry["kind"] == kind and entry["name"] == name and entry.get("file") == rel:
            return entry
    return None


def set_aside(layout: PkiLayout, entry: dict[str, Any], remove: bool) -> None:
    """Move the entry's pair to `NAME.<serial>.pem/.key` (or delete it) so a new pair can take its place."""
    cert_path, key_path = own_paths(layout, entry["kind"], entry["name"])
    if remove:
        for path in (key_path, cert_path):
            path.unlink(missing_ok=True)
        entry["file"] = None
        return
    stem = cert_path.stem if entry["kind"] != "server" else "server"
    old_cert = cert_path.with_name(f"{stem}.{entry['serial']}.pem")
    old_key = key_path.with_name(f"{stem}.{entry['serial']}.key")
    if key_path.exists():
        os.replace(key_path, old_key)
    if cert_path.exists():
        os.replace(cert_path, old_cert)
    entry["file"] = relative_to_root(layout, old_cert)


def resolve(layout: PkiLayout, index: dict[str, Any], target: str) -> list[dict[str, Any]]:
    """The index entries `target` names: `device:ID`, `service:NAME`, `server`, a bare name, a hex serial."""
    kind_hint, sep, rest = target.partition(":")
    kinds = ("device", "service", "server")
    if sep and kind_hint in ("device", "service"):
        kinds, target = (kind_hint,), rest

    def named(entry: dict[str, Any]) -> bool:
        if entry["kind"] not in kinds:
            return False
        if entry["kind"] == "server":
            return target == "server"
        return target in (entry["name"], service_cn(entry["name"]) if entry["kind"] == "service" else None)

    by_name = [e for e in index["certs"] if named(e)]
    kinds_named = sorted({e["kind"] for e in by_name})
    if len(kinds_named) > 1:
        raise PkiError(
            f"{target!r} names certificates of several kinds ({', '.join(kinds_named)}); "
            f"say `device:{target}` or `service:{target}`, or give the serial (`iot-etl certs list`)"
        )
    if by_name:
        return by_name
    serial = parse_serial(target)
    by_serial = [e for e in index["certs"] if serial is not None and int(e["serial"], 16) == serial]
    if by_serial:
        return by_serial
    raise PkiError(
        f"no certificate named {target!r} (device id, service name, `server` or hex serial) "
        f"in {layout.root}; `iot-etl certs list` shows them"
    )


def list_certs(layout: PkiLayout) -> list[CertInfo]:
    """Every certificate of the index, by kind, name and issue time."""
    require_init(layout)
    infos = []
    for entry in layout.read_index()["certs"]:
        path = layout.root / entry["file"] if entry.get("file") else None
        canonical = own_paths(layout, entry["kind"], entry["name"])[0]
        infos.append(
            CertInfo(
                serial=entry["serial"],
                kind=entry["kind"],
                name=entry["name"],
                role=entry["role"],
                not_before=dt.datetime.fromisoformat(entry["not_before"]),
                not_after=dt.datetime.fromisoformat(entry["not_after"]),
                revoked_at=dt.datetime.fromisoformat(entry["revoked_at"]) if entry["revoked_at"] else None,
                path=path,
                current=path == canonical,
            )
        )
    order = {"server": 0, "service": 1, "device": 2}
    return sorted(infos, key=lambda i: (order.get(i.kind, 3), i.name, i.not_before))
