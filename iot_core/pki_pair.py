"""Whether a certificate file and a key file are a usable pair, said without quoting either file.

A rotated certificate replaces its pair in two steps (key, then certificate), so a reader that loads the
pair at that instant may see a new key with the old certificate: readers check the pair with
`check_cert_and_key` and read again on a mismatch.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from iot_core.pki_errors import PkiError


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
