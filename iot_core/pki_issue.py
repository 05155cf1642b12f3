"""The project's own PKI: a device CA, a service CA, and the certificates they issue.

Two independent self-signed roots (EC P-256, path length 0): the device CA signs device certificates
(CN = device id, clientAuth), the service CA signs service certificates (CN = `iot-etl-<name>`, OU = the
role, clientAuth) and the broker's server certificate (serverAuth). They share no root, so a device
certificate is refused on the service listener (security-facts). `crl.pem` holds both CAs' CRLs
(`iot_core.pki_crl`).

Errors a user can fix are `PkiError`: one line, the bad value and what to do. A new key and its
certificate are made in memory before anything is written; the key is written first.
"""

from __future__ import annotations

import datetime as dt
from contextlib import suppress
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iot_core.device_ids import validate_device_id, validate_name
from iot_core.pki_crl import CRL_DAYS, check_period, crl_period, write_crl_locked
from iot_core.pki_errors import PkiError
from iot_core.pki_files import locked, make_private_dir, require_init, write_index, write_private
from iot_core.pki_index import current_entry, own_paths, relative_to_root, resolve, serial_hex, set_aside
from iot_core.pki_layout import SERVICE_ROLES, PkiLayout, service_cn
from iot_core.pki_x509 import (
    cert_pem,
    key_pem,
    load_ca,
    new_key,
    parse_san,
    self_signed_ca,
    signed_leaf,
    utc_now,
)

SERVER_DAYS = 365
SERVICE_DAYS = 365
DEVICE_DAYS = 365
DEFAULT_SANS = ("DNS:localhost", "IP:127.0.0.1", "IP:::1")
SERVER_CN = "iot-etl broker"  # a space: no service name or device id can be this


def _issuer_paths(layout: PkiLayout, kind: str) -> tuple[Path, Path]:
    if kind == "device":
        return layout.device_ca_cert, layout.device_ca_key
    return layout.service_ca_cert, layout.service_ca_key


def _new_leaf(
    layout: PkiLayout,
    kind: str,
    name: str,
    role: str,
    days: int,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new key and its certificate, in memory (nothing is written before both exist)."""
    if days < 1:
        raise PkiError(f"--days {days}: a certificate must be valid for at least 1 day")
    issuer = load_ca(*_issuer_paths(layout, kind))
    key = new_key()
    # The broker takes the identity from the CN; the URN is there for verifiers that require a SAN
    # (RFC 5280 profile verifiers such as cryptography's client verifier).
    if kind == "device":
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
        sans = [x509.UniformResourceIdentifier(f"urn:iot-etl:device:{name}")]
    elif kind == "service":
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iot-etl"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                x509.NameAttribute(NameOID.COMMON_NAME, service_cn(name)),
            ]
        )
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
        sans = [x509.UniformResourceIdentifier(f"urn:iot-etl:service:{name}")]
    else:
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iot-etl"),
                x509.NameAttribute(NameOID.COMMON_NAME, SERVER_CN),
            ]
        )
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    return signed_leaf(subject, issuer, key, days, usage, sans), key


def _install(
    layout: PkiLayout,
    index: dict[str, Any],
    kind: str,
    name: str,
    role: str,
    days: int,
    pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> x509.Certificate:
    """Write the pair to the name's own paths (key first) and record it in the index."""
    cert, key = pair
    cert_path, key_path = own_paths(layout, kind, name)
    make_private_dir(cert_path.parent)
    write_private(key_path, key_pem(key))
    write_private(cert_path, cert_pem(cert))
    index["certs"].append(
        {
            "serial": serial_hex(cert.serial_number),
            "kind": kind,
            "name": name,
            "role": role,
            "days": days,
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "revoked_at": None,
            "file": relative_to_root(layout, cert_path),
        }
    )
    write_index(layout, index)
    return cert


def _issue(
    layout: PkiLayout,
    kind: str,
    name: str,
    role: str,
    days: int,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    require_init(layout)
    with locked(layout):
        index = layout.read_index()
        current = current_entry(layout, index, kind, name)
        if current is not None:
            still_valid = (
                current["revoked_at"] is None and dt.datetime.fromisoformat(current["not_after"]) > utc_now()
            )
            if still_valid and kind != "server":
                what = "device" if kind == "device" else "service"
                raise PkiError(
                    f"{what} {name!r} already has a valid certificate (serial {current['serial']}); "
                    f"renew it with `iot-etl certs rotate {name}`"
                )
        pair = _new_leaf(layout, kind, name, role, days, sans)
        if current is not None:
            set_aside(layout, current, remove=False)
        return _install(layout, index, kind, name, role, days, pair)


def init_pki(layout: PkiLayout, crl_days: int = CRL_DAYS) -> bool:
    """Create the two CAs, `ca-chain.pem`, an initial CRL and the index; False when the CAs already exist.

    Never replaces a CA: a CA key without its certificate (or the reverse) is refused.
    """
    check_period(dt.timedelta(days=crl_days))
    if layout.root.exists() and not layout.root.is_dir():
        raise PkiError(
            f"IOT_PKI_DIR {str(layout.root)!r} is not a directory; point IOT_PKI_DIR at a directory"
        )
    for cert_path, key_path in (
        (layout.device_ca_cert, layout.device_ca_key),
        (layout.service_ca_cert, layout.service_ca_key),
    ):
        if cert_path.exists() != key_path.exists():
            have, missing = (cert_path, key_path) if cert_path.exists() else (key_path, cert_path)
            raise PkiError(
                f"{have} exists but {missing} does not; restore it from a backup or remove {layout.root}"
            )
    make_private_dir(layout.root)
    created = False
    with locked(layout):
        make_private_dir(layout.ca_dir)
        for cert_path, key_path, common_name in (
            (layout.device_ca_cert, layout.device_ca_key, "iot-etl device CA"),
            (layout.service_ca_cert, layout.service_ca_key, "iot-etl service CA"),
        ):
            if cert_path.exists():
                continue
            cert, key = self_signed_ca(common_name)
            write_private(key_path, key_pem(key))
            write_private(cert_path, cert_pem(cert))
            created = True
        chain = layout.device_ca_cert.read_bytes() + layout.service_ca_cert.read_bytes()
        if not layout.ca_chain.exists() or layout.ca_chain.read_bytes() != chain:
            write_private(layout.ca_chain, chain)
        index = layout.read_index()
        if not layout.index.exists():
            write_index(layout, index)
        if created or not layout.crl.exists():
            write_crl_locked(layout, index, dt.timedelta(days=crl_days))
    return created


def issue_server(layout: PkiLayout, sans: list[str], days: int = SERVER_DAYS) -> x509.Certificate:
    """The broker's certificate (service CA, serverAuth, `sans` or DEFAULT_SANS).

    Replaces an existing one, which is kept as `server.<serial>.pem` (still valid until it expires).
    """
    names = [parse_san(s) for s in (sans or DEFAULT_SANS)]
    return _issue(layout, "server", "server", "server", days, names)


def issue_device(layout: PkiLayout, device_id: str, days: int = DEVICE_DAYS) -> x509.Certificate:
    """A device certificate (device CA, CN = the device id, clientAuth) in `devices/ID.pem`/`.key`."""
    try:
        validate_device_id(device_id)
    except ValueError as exc:
        raise PkiError(str(exc)) from None
    return _issue(layout, "device", device_id, "device", days)


def issue_service(
    layout: PkiLayout, role: str, name: str | None = None, days: int = SERVICE_DAYS
) -> x509.Certificate:
    """A service certificate (service CA, CN = `iot-etl-<name>`, OU = role) in `services/NAME.pem`/`.key`."""
    if role not in SERVICE_ROLES:
        raise PkiError(f"service role {role!r} is not one of {', '.join(SERVICE_ROLES)}; pick one of those")
    try:
        validate_name(name if name is not None else role, "service name")
    except ValueError as exc:
        raise PkiError(str(exc)) from None
    return _issue(layout, "service", name if name is not None else role, role, days)


def rotate(
    layout: PkiLayout, name: str, revoke_old: bool, next_update: dt.timedelta | None = None
) -> x509.Certificate:
    """A new key and certificate for a device id, service name or `server`, same role, SANs and lifetime.

    The old pair is kept as `NAME.<serial>.pem`/`.key` (still valid until it expires) or, with
    `revoke_old`, revoked and deleted (the CRL is re-signed, validity as in `revoke`).
    """
    check_period(next_update)
    require_init(layout)
    with locked(layout):
        index = layout.read_index()
        entries = resolve(layout, index, name)
        currents = [
            e
            for e in entries
            if e.get("file") == relative_to_root(layout, own_paths(layout, e["kind"], e["name"])[0])
        ]
        if not currents:
            raise PkiError(
                f"{name!r} has no current certificate to rotate; "
                "issue one with `iot-etl certs device|service|server`"
            )
        old = currents[0]
        sans = None
        if old["kind"] == "server":
            cert = x509.load_pem_x509_certificate(layout.server_cert.read_bytes())
            with suppress(x509.ExtensionNotFound):
                sans = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        kind, role, days = old["kind"], old["role"], int(old.get("days", DEVICE_DAYS))
        pair = _new_leaf(layout, kind, old["name"], role, days, sans)
        set_aside(layout, old, remove=revoke_old)
        if revoke_old and old["revoked_at"] is None:
            old["revoked_at"] = utc_now().isoformat()
            old["reason"] = "superseded"
        cert = _install(layout, index, kind, old["name"], role, days, pair)
        if revoke_old:
            write_crl_locked(layout, index, next_update or crl_period(layout))
        return cert
