"""Revocation: marking certificates revoked in the index, and the CRLs of both CAs in `crl.pem`.

`crl.pem` holds the device CA's CRL first, then the service CA's. An expired CRL makes the broker refuse
every client, so `up` re-signs it at half-life (`crl_needs_refresh`).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from iot_core.pki_errors import PkiError
from iot_core.pki_files import locked, require_init, write_index, write_private
from iot_core.pki_index import resolve
from iot_core.pki_layout import PkiLayout
from iot_core.pki_x509 import BACKDATE, load_ca, utc_now

CRL_DAYS = 30


def revoke(layout: PkiLayout, id_or_serial: str, next_update: dt.timedelta | None = None) -> list[str]:
    """Revoke every unrevoked certificate of a device id or service name, or the one with a hex serial.

    Re-signs the CRLs (validity `next_update`, default: as long as the current CRL's) and returns the
    serials revoked now (empty when all were revoked already). Files stay in place, marked in the index.
    """
    check_period(next_update)
    require_init(layout)
    with locked(layout):
        index = layout.read_index()
        entries = resolve(layout, index, id_or_serial)
        now = utc_now()
        revoked = []
        for entry in entries:
            if entry["revoked_at"] is None:
                entry["revoked_at"] = now.isoformat()
                revoked.append(entry["serial"])
        if revoked:
            write_index(layout, index)
            write_crl_locked(layout, index, next_update or crl_period(layout))
        return revoked


def crl_period(layout: PkiLayout) -> dt.timedelta:
    """How long the current CRLs were signed for (the default validity of a re-signed CRL)."""
    crls = read_crls(layout)
    periods = [c.next_update_utc - c.last_update_utc for c in crls if c.next_update_utc is not None]
    return min(periods) - BACKDATE if periods else dt.timedelta(days=CRL_DAYS)


def check_period(next_update: dt.timedelta | None) -> None:
    if next_update is not None and next_update <= dt.timedelta(0):
        raise PkiError(f"CRL validity {next_update} is not positive; give e.g. 30d or 12h")


def write_crl_locked(layout: PkiLayout, index: dict[str, Any], next_update: dt.timedelta) -> None:
    """Re-sign both CAs' CRLs from `index` under a new CRL number; the caller holds the PKI's lock."""
    check_period(next_update)
    index["crl_number"] = int(index.get("crl_number", 0)) + 1
    now = utc_now()
    pems = []
    for ca_kinds, cert_path, key_path in (
        (("device",), layout.device_ca_cert, layout.device_ca_key),
        (("service", "server"), layout.service_ca_cert, layout.service_ca_key),
    ):
        ca_cert, ca_key = load_ca(cert_path, key_path)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - BACKDATE)
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
    write_private(layout.crl, b"".join(pems))
    write_index(layout, index)


def write_crl(layout: PkiLayout, next_update: dt.timedelta) -> None:
    """Re-sign both CAs' CRLs into `crl.pem`, valid from now for `next_update`."""
    check_period(next_update)
    require_init(layout)
    with locked(layout):
        write_crl_locked(layout, layout.read_index(), next_update)


_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----\s*", re.DOTALL)


def read_crls(layout: PkiLayout) -> list[x509.CertificateRevocationList]:
    """The CRLs in `crl.pem` (device CA's first); empty when there is none."""
    try:
        data = layout.crl.read_bytes()
    except FileNotFoundError:
        return []
    return [x509.load_pem_x509_crl(block.group(0)) for block in _PEM_CRL.finditer(data)]


def crl_next_update(layout: PkiLayout) -> dt.datetime | None:
    """When the first of the CRLs in `crl.pem` expires (an expired CRL refuses every client); None if none."""
    ends = [c.next_update_utc for c in read_crls(layout) if c.next_update_utc is not None]
    return min(ends) if ends else None


def crl_needs_refresh(layout: PkiLayout, now: dt.datetime | None = None) -> bool:
    """Whether the CRL is missing or past its half-life (`up` re-signs it then)."""
    crls = read_crls(layout)
    if len(crls) < 2:
        return True
    at = now or utc_now()
    for crl in crls:
        if crl.next_update_utc is None:
            continue
        if at >= crl.last_update_utc + (crl.next_update_utc - crl.last_update_utc) / 2:
            return True
    return False
