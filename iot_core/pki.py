"""The project's own PKI: a device CA, a service CA, and the certificates they issue.

Two independent self-signed roots (EC P-256, path length 0): the device CA signs device certificates
(CN = device id, clientAuth), the service CA signs service certificates (CN = `iot-etl-<name>`, OU = the
role, clientAuth) and the broker's server certificate (serverAuth). They share no root, so a device
certificate is refused on the service listener (security-facts). `crl.pem` holds both CAs' CRLs.

Every file is written atomically (a temporary file, then `os.replace`) with mode 0600 from its creation,
in directories of mode 0700; key material is never printed, logged or put in an error message.
Changes hold an exclusive `flock` on `<root>/.lock`, so `up` re-signing the CRL and a user revoking a
device do not lose each other's update. Errors a user can fix are `PkiError`: one line, the bad value and
what to do.

A rotated certificate replaces its pair in two steps (key, then certificate), so a reader that loads the
pair at that instant may see a new key with the old certificate: readers check the pair with
`check_cert_and_key` and read again on a mismatch.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iot_core.device_ids import validate_device_id, validate_name
from iot_core.pki_layout import SERVICE_ROLES, PkiLayout, service_cn

CA_DAYS = 3650
SERVER_DAYS = 365
SERVICE_DAYS = 365
DEVICE_DAYS = 365
CRL_DAYS = 30
DEFAULT_SANS = ("DNS:localhost", "IP:127.0.0.1", "IP:::1")
SERVER_CN = "iot-etl broker"  # a space: no service name or device id can be this
# Certificates and CRLs start a little in the past: a broker or device whose clock runs behind would
# otherwise refuse them as "not yet valid".
_BACKDATE = dt.timedelta(minutes=5)
_DNS_NAME = re.compile(r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


class PkiError(ValueError):
    """A PKI operation refused with one line a user can act on (the bad value and what to do)."""


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
        if self.not_after <= (now or _now()):
            return "expired"
        return "valid" if self.current else "valid, replaced"


# --- files -------------------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically; the file is 0600 from its creation on."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextmanager
def _locked(layout: PkiLayout) -> Iterator[None]:
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_index(layout: PkiLayout, index: dict[str, Any]) -> None:
    _write_private(layout.index, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())


def _require_init(layout: PkiLayout) -> None:
    if not layout.initialized():
        raise PkiError(f"no PKI in {layout.root}: run `iot-etl certs init` first (or set IOT_PKI_DIR)")


# --- keys, names, certificates -------------------------------------------------------------------------


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path} is not an EC key; restore the CA key that `iot-etl certs init` wrote")
    return cert, key


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _self_signed_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iot-etl"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    start = _now() - _BACKDATE
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    subject: x509.Name,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    key: ec.EllipticCurvePrivateKey,
    days: int,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    ca_cert, ca_key = issuer
    start = _now() - _BACKDATE
    # a certificate outliving its CA would fail verification at the CA's end anyway: say so in not_after
    end = min(start + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def parse_san(text: str) -> x509.GeneralName:
    """`DNS:name` or `IP:address` (a bare value is an IP address if it parses as one, else a DNS name)."""
    kind, sep, value = text.partition(":")
    if not sep or kind.upper() not in ("DNS", "IP"):
        # "::1" and "fe80::1" are bare IP addresses; "host" is a bare DNS name
        kind, value = ("IP", text) if _is_ip(text) else ("DNS", text)
    if kind.upper() == "IP":
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            raise PkiError(
                f"--san {text!r}: {value!r} is not an IP address; e.g. IP:127.0.0.1 or IP:::1"
            ) from None
    if not _DNS_NAME.fullmatch(value) or len(value) > 253:
        raise PkiError(
            f"--san {text!r}: {value!r} is not a DNS name; e.g. DNS:localhost or DNS:broker.example.com"
        )
    return x509.DNSName(value)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _san_text(name: x509.GeneralName) -> str:
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    return f"DNS:{name.value}"


# --- the index -------------------------------------------------------------------------------------


def _serial_hex(serial: int) -> str:
    return f"{serial:x}"


def _parse_serial(text: str) -> int | None:
    digits = text.strip().lower().removeprefix("0x").replace(":", "")
    if not digits or not re.fullmatch(r"[0-9a-f]+", digits):
        return None
    return int(digits, 16)


def _rel(layout: PkiLayout, path: Path) -> str:
    return str(path.relative_to(layout.root))


def _paths(layout: PkiLayout, kind: str, name: str) -> tuple[Path, Path]:
    if kind == "device":
        return layout.device(name)
    if kind == "service":
        return layout.service(name)
    return layout.server()


def _issuer_paths(layout: PkiLayout, kind: str) -> tuple[Path, Path]:
    if kind == "device":
        return layout.device_ca_cert, layout.device_ca_key
    return layout.service_ca_cert, layout.service_ca_key


def _current(layout: PkiLayout, index: dict[str, Any], kind: str, name: str) -> dict[str, Any] | None:
    rel = _rel(layout, _paths(layout, kind, name)[0])
    for entry in index["certs"]:
        if entry["kind"] == kind and entry["name"] == name and entry.get("file") == rel:
            return entry
    return None


def _set_aside(layout: PkiLayout, entry: dict[str, Any], remove: bool) -> None:
    """Move the entry's pair to `NAME.<serial>.pem/.key` (or delete it) so a new pair can take its place."""
    cert_path, key_path = _paths(layout, entry["kind"], entry["name"])
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
    entry["file"] = _rel(layout, old_cert)


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
    issuer = _load_ca(*_issuer_paths(layout, kind))
    key = _new_key()
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
    return _leaf(subject, issuer, key, days, usage, sans), key


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
    cert_path, key_path = _paths(layout, kind, name)
    _make_private_dir(cert_path.parent)
    _write_private(key_path, _key_pem(key))
    _write_private(cert_path, _cert_pem(cert))
    index["certs"].append(
        {
            "serial": _serial_hex(cert.serial_number),
            "kind": kind,
            "name": name,
            "role": role,
            "days": days,
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "revoked_at": None,
            "file": _rel(layout, cert_path),
        }
    )
    _write_index(layout, index)
    return cert


def _issue(
    layout: PkiLayout,
    kind: str,
    name: str,
    role: str,
    days: int,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    _require_init(layout)
    with _locked(layout):
        index = layout.read_index()
        current = _current(layout, index, kind, name)
        if current is not None:
            still_valid = (
                current["revoked_at"] is None and dt.datetime.fromisoformat(current["not_after"]) > _now()
            )
            if still_valid and kind != "server":
                what = "device" if kind == "device" else "service"
                raise PkiError(
                    f"{what} {name!r} already has a valid certificate (serial {current['serial']}); "
                    f"renew it with `iot-etl certs rotate {name}`"
                )
        pair = _new_leaf(layout, kind, name, role, days, sans)
        if current is not None:
            _set_aside(layout, current, remove=False)
        return _install(layout, index, kind, name, role, days, pair)


# --- public API ------------------------------------------------------------------------------------


def init_pki(layout: PkiLayout, crl_days: int = CRL_DAYS) -> bool:
    """Create the two CAs, `ca-chain.pem`, an initial CRL and the index; False when the CAs already exist.

    Never replaces a CA: a CA key without its certificate (or the reverse) is refused.
    """
    _check_period(dt.timedelta(days=crl_days))
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
    _make_private_dir(layout.root)
    created = False
    with _locked(layout):
        _make_private_dir(layout.ca_dir)
        for cert_path, key_path, common_name in (
            (layout.device_ca_cert, layout.device_ca_key, "iot-etl device CA"),
            (layout.service_ca_cert, layout.service_ca_key, "iot-etl service CA"),
        ):
            if cert_path.exists():
                continue
            cert, key = _self_signed_ca(common_name)
            _write_private(key_path, _key_pem(key))
            _write_private(cert_path, _cert_pem(cert))
            created = True
        chain = layout.device_ca_cert.read_bytes() + layout.service_ca_cert.read_bytes()
        if not layout.ca_chain.exists() or layout.ca_chain.read_bytes() != chain:
            _write_private(layout.ca_chain, chain)
        index = layout.read_index()
        if not layout.index.exists():
            _write_index(layout, index)
        if created or not layout.crl.exists():
            _write_crl_locked(layout, index, dt.timedelta(days=crl_days))
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


def _resolve(layout: PkiLayout, index: dict[str, Any], target: str) -> list[dict[str, Any]]:
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
    serial = _parse_serial(target)
    by_serial = [e for e in index["certs"] if serial is not None and int(e["serial"], 16) == serial]
    if by_serial:
        return by_serial
    raise PkiError(
        f"no certificate named {target!r} (device id, service name, `server` or hex serial) "
        f"in {layout.root}; `iot-etl certs list` shows them"
    )


def revoke(layout: PkiLayout, id_or_serial: str, next_update: dt.timedelta | None = None) -> list[str]:
    """Revoke every unrevoked certificate of a device id or service name, or the one with a hex serial.

    Re-signs the CRLs (validity `next_update`, default: as long as the current CRL's) and returns the
    serials revoked now (empty when all were revoked already). Files stay in place, marked in the index.
    """
    _check_period(next_update)
    _require_init(layout)
    with _locked(layout):
        index = layout.read_index()
        entries = _resolve(layout, index, id_or_serial)
        now = _now()
        revoked = []
        for entry in entries:
            if entry["revoked_at"] is None:
                entry["revoked_at"] = now.isoformat()
                revoked.append(entry["serial"])
        if revoked:
            _write_index(layout, index)
            _write_crl_locked(layout, index, next_update or _crl_period(layout))
        return revoked


def rotate(
    layout: PkiLayout, name: str, revoke_old: bool, next_update: dt.timedelta | None = None
) -> x509.Certificate:
    """A new key and certificate for a device id, service name or `server`, same role, SANs and lifetime.

    The old pair is kept as `NAME.<serial>.pem`/`.key` (still valid until it expires) or, with
    `revoke_old`, revoked and deleted (the CRL is re-signed, validity as in `revoke`).
    """
    _check_period(next_update)
    _require_init(layout)
    with _locked(layout):
        index = layout.read_index()
        entries = _resolve(layout, index, name)
        currents = [
            e for e in entries if e.get("file") == _rel(layout, _paths(layout, e["kind"], e["name"])[0])
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
        _set_aside(layout, old, remove=revoke_old)
        if revoke_old and old["revoked_at"] is None:
            old["revoked_at"] = _now().isoformat()
            old["reason"] = "superseded"
        cert = _install(layout, index, kind, old["name"], role, days, pair)
        if revoke_old:
            _write_crl_locked(layout, index, next_update or _crl_period(layout))
        return cert


def _crl_period(layout: PkiLayout) -> dt.timedelta:
    """How long the current CRLs were signed for (the default validity of a re-signed CRL)."""
    crls = _read_crls(layout)
    periods = [c.next_update_utc - c.last_update_utc for c in crls if c.next_update_utc is not None]
    return min(periods) - _BACKDATE if periods else dt.timedelta(days=CRL_DAYS)


def _check_period(next_update: dt.timedelta | None) -> None:
    if next_update is not None and next_update <= dt.timedelta(0):
        raise PkiError(f"CRL validity {next_update} is not positive; give e.g. 30d or 12h")


def _write_crl_locked(layout: PkiLayout, index: dict[str, Any], next_update: dt.timedelta) -> None:
    _check_period(next_update)
    index["crl_number"] = int(index.get("crl_number", 0)) + 1
    now = _now()
    pems = []
    for ca_kinds, cert_path, key_path in (
        (("device",), layout.device_ca_cert, layout.device_ca_key),
        (("service", "server"), layout.service_ca_cert, layout.service_ca_key),
    ):
        ca_cert, ca_key = _load_ca(cert_path, key_path)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + next_update)
            .add_extension(x509.CRLNumber(index["crl_number"]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        for entry in index["certs"]:
            if entry["kind"] in ca_kinds and entry["revoked_at"] is not None:
                revoked = x509.RevokedCertificateBuilder().serial_number(int(entry["serial"], 16))
                revoked = revoked.revocation_date(dt.datetime.fromisoformat(entry["revoked_at"]))
                if entry.get("reason") == "superseded":
                    revoked = revoked.add_extension(
                        x509.CRLReason(x509.ReasonFlags.superseded), critical=False
                    )
                builder = builder.add_revoked_certificate(revoked.build())
        pems.append(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    _write_private(layout.crl, b"".join(pems))
    _write_index(layout, index)


def write_crl(layout: PkiLayout, next_update: dt.timedelta) -> None:
    """Re-sign both CAs' CRLs into `crl.pem`, valid from now for `next_update`."""
    _check_period(next_update)
    _require_init(layout)
    with _locked(layout):
        _write_crl_locked(layout, layout.read_index(), next_update)


_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----\s*", re.DOTALL)


def _read_crls(layout: PkiLayout) -> list[x509.CertificateRevocationList]:
    try:
        data = layout.crl.read_bytes()
    except FileNotFoundError:
        return []
    return [x509.load_pem_x509_crl(block.group(0)) for block in _PEM_CRL.finditer(data)]


def read_crls(layout: PkiLayout) -> list[x509.CertificateRevocationList]:
    """The CRLs in `crl.pem` (device CA's first); empty when there is none."""
    return _read_crls(layout)


def crl_next_update(layout: PkiLayout) -> dt.datetime | None:
    """When the first of the CRLs in `crl.pem` expires (an expired CRL refuses every client); None if none."""
    ends = [c.next_update_utc for c in _read_crls(layout) if c.next_update_utc is not None]
    return min(ends) if ends else None


def crl_needs_refresh(layout: PkiLayout, now: dt.datetime | None = None) -> bool:
    """Whether the CRL is missing or past its half-life (`up` re-signs it then)."""
    crls = _read_crls(layout)
    if len(crls) < 2:
        return True
    at = now or _now()
    for crl in crls:
        if crl.next_update_utc is None:
            continue
        if at >= crl.last_update_utc + (crl.next_update_utc - crl.last_update_utc) / 2:
            return True
    return False


def list_certs(layout: PkiLayout) -> list[CertInfo]:
    """Every certificate of the index, by kind, name and issue time."""
    _require_init(layout)
    infos = []
    for entry in layout.read_index()["certs"]:
        path = layout.root / entry["file"] if entry.get("file") else None
        canonical = _paths(layout, entry["kind"], entry["name"])[0]
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


def check_cert_and_key(cert_path: Path, key_path: Path) -> x509.Certificate:
    """The certificate when `cert_path` is a PEM certificate and `key_path` its (unencrypted PEM) key.

    PkiError otherwise, naming the file (never its contents).
    """
    try:
        cert_data = Path(cert_path).read_bytes()
        key_data = Path(key_path).read_bytes()
    except OSError as exc:
        raise PkiError(
            f"cannot read {exc.filename}: {exc.strerror}; check the path and its permissions"
        ) from None
    try:
        cert = x509.load_pem_x509_certificate(cert_data)
    except ValueError:
        raise PkiError(
            f"{cert_path} is not a PEM certificate; give the certificate file (-----BEGIN CERTIFICATE-----)"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise PkiError(
            f"{key_path} is not an unencrypted PEM private key; give the key file of {cert_path}"
        ) from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
        raise PkiError(f"{key_path} is not the key of {cert_path}; give the key issued with that certificate")
    return cert


def san_texts(cert: x509.Certificate) -> list[str]:
    """The certificate's subject alternative names as `DNS:...`/`IP:...`."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [_san_text(n) for n in sans]
