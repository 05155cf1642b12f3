"""`iot-etl certs`: two independent CAs, device/service/server certificates, revocation, rotation.

Pure: no services. The CLI runs in-process (CliRunner on `iot_etl.cli.main`) and once as the installed
console script; OpenSSL (subprocess) checks the chains and the two-CRL file independently of our code.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from iot_core.pki_crl import crl_needs_refresh, read_crls
from iot_core.pki_errors import PkiError
from iot_core.pki_index import list_certs
from iot_core.pki_layout import PkiLayout
from iot_core.pki_pair import check_cert_and_key
from iot_core.settings import get_settings
from iot_etl.cli import main


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PkiLayout]:
    """IOT_PKI_DIR pointing at a fresh directory (not created: `certs init` makes it)."""
    root = tmp_path / "state" / "pki"
    monkeypatch.setenv("IOT_PKI_DIR", str(root))
    get_settings.cache_clear()
    yield PkiLayout(root)
    get_settings.cache_clear()


def certs(*args: str) -> Result:
    return CliRunner().invoke(main, ["certs", *args], catch_exceptions=False)


def ok(*args: str) -> str:
    result = certs(*args)
    assert result.exit_code == 0, f"certs {args}: {result.output}"
    return result.output


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file and directory under the state directory, with mode and content."""
    top = root.parent
    if not top.exists():
        return {}
    return {
        str(p.relative_to(top)): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
        for p in sorted(top.rglob("*"))
    }


def revoked_serials(layout: PkiLayout) -> dict[str, set[int]]:
    """Serials per CRL issuer CN, parsed from crl.pem."""
    out: dict[str, set[int]] = {}
    for crl in read_crls(layout):
        issuer = crl.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        out[str(issuer)] = {r.serial_number for r in crl}
    return out


def verifies(ca: Path, leaf: Path) -> bool:
    verifier = PolicyBuilder().store(Store([load(ca)])).build_client_verifier()
    try:
        verifier.verify(load(leaf), [])
    except VerificationError:
        return False
    return True


def openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_init_makes_private_files_and_never_replaces_a_ca(layout: PkiLayout) -> None:
    out = ok("init")
    assert str(layout.device_ca_cert) in out and str(layout.service_ca_key) in out
    for directory in (layout.root, layout.ca_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in (
        layout.device_ca_key,
        layout.service_ca_key,
        layout.device_ca_cert,
        layout.ca_chain,
        layout.crl,
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    device_ca, service_ca = load(layout.device_ca_cert), load(layout.service_ca_cert)
    assert device_ca.subject != service_ca.subject
    for ca in (device_ca, service_ca):
        assert ca.issuer == ca.subject  # each its own root: nothing above both
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign and usage.crl_sign
    chain = x509.load_pem_x509_certificates(layout.ca_chain.read_bytes())
    assert chain == [device_ca, service_ca]
    assert len(read_crls(layout)) == 2 and not crl_needs_refresh(layout)

    before = snapshot(layout.root)
    assert "exist already" in ok("init")
    assert snapshot(layout.root) == before


def test_certs_runs_under_umask_077_and_restores_the_callers(layout: PkiLayout) -> None:
    previous = os.umask(0o022)
    try:
        ok("init")
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(previous)
    # ca-chain.pem and crl.pem are not secret, and still only the owner may read them
    assert {stat.S_IMODE(p.stat().st_mode) for p in layout.root.rglob("*") if p.is_file()} == {0o600}


def test_device_certificate_verifies_against_the_device_ca_only(layout: PkiLayout) -> None:
    ok("init")
    out = ok("device", "sensor-01", "--days", "30")
    cert_path, key_path = layout.device("sensor-01")
    assert f"{cert_path}" in out and f"{key_path}" in out
    assert stat.S_IMODE(layout.devices_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert = check_cert_and_key(cert_path, key_path)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "sensor-01"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert dt.timedelta(days=29) < cert.not_valid_after_utc - dt.datetime.now(dt.UTC) <= dt.timedelta(days=30)
    assert verifies(layout.device_ca_cert, cert_path)
    assert not verifies(layout.service_ca_cert, cert_path)


def test_service_certificate_names_its_role_and_verifies_against_the_service_ca_only(
    layout: PkiLayout,
) -> None:
    ok("init")
    ok("service", "listener")
    ok("service", "ops", "--name", "ops-alice")
    cert = load(layout.service("ops-alice")[0])
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "iot-etl-ops-alice"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "ops"
    assert verifies(layout.service_ca_cert, layout.service("listener")[0])
    assert not verifies(layout.device_ca_cert, layout.service("listener")[0])
    assert layout.service_names() == {"listener": "listener", "ops-alice": "ops"}


def test_server_certificate_has_the_given_sans_and_the_service_ca_as_issuer(layout: PkiLayout) -> None:
    ok("init")
    ok("server")
    sans = load(layout.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    first = load(layout.server_cert)

    ok("server", "--san", "DNS:broker.example.com", "--san", "IP:10.1.2.3")
    cert = load(layout.server_cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["broker.example.com"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    assert cert.issuer == load(layout.service_ca_cert).subject
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    # the replaced one is kept under its serial
    assert load(layout.root / f"server.{first.serial_number:x}.pem") == first


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("device", "Sensor-01"), "'Sensor-01'"),
        (("device", "a/b"), "'a/b'"),
        (("device", "a+b"), "'a+b'"),
        (("device", "a#"), "'a#'"),
        (("device", "a%b"), "'a%b'"),
        (("device", "a b"), "'a b'"),
        (("device", "evil\nallow_anonymous true"), "'evil\\nallow_anonymous true'"),
        (("device", ""), "''"),
        (("device", "x" * 64), "'" + "x" * 64 + "'"),
        (("device", "iot-etl-listener"), "'iot-etl-listener'"),
        (("service", "admin"), "'admin'"),
        (("service", "listener", "--name", "a/b"), "'a/b'"),
        (("service", "listener", "--name", "x\ny"), "'x\\ny'"),
        (("revoke", "no-such-device"), "'no-such-device'"),
        (("rotate", "no-such-device"), "'no-such-device'"),
        (("crl", "--next-update", "soon"), "'soon'"),
        (("crl", "--next-update", "0d"), "'0d'"),
        (("server", "--san", "URI:http://x"), "'URI:http://x'"),
        (("server", "--san", "IP:300.1.1.1"), "'IP:300.1.1.1'"),
    ],
)
def test_bad_input_exits_2_in_one_line_and_writes_nothing(
    layout: PkiLayout, args: tuple[str, ...], named: str
) -> None:
    ok("init")
    ok("device", "sensor-01")
    before = snapshot(layout.root)
    result = certs(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iot-etl: error: "), result.stderr
    assert named in lines[0]
    assert result.stdout == ""
    assert snapshot(layout.root) == before


@pytest.mark.parametrize("args", [("device", "sensor-01"), ("service", "listener"), ("server",), ("list",)])
def test_commands_before_init_exit_2_and_create_nothing(layout: PkiLayout, args: tuple[str, ...]) -> None:
    result = certs(*args)
    assert result.exit_code == 2
    assert "run `iot-etl certs init` first" in result.stderr
    assert not layout.root.parent.exists()


def test_a_device_cannot_be_issued_twice_without_rotate(layout: PkiLayout) -> None:
    ok("init")
    ok("device", "sensor-01")
    before = snapshot(layout.root)
    result = certs("device", "sensor-01")
    assert result.exit_code == 2 and "iot-etl certs rotate sensor-01" in result.stderr
    assert snapshot(layout.root) == before


def test_revoke_lists_the_serials_in_the_crl_of_their_ca(layout: PkiLayout) -> None:
    ok("init")
    ok("device", "sensor-01")
    ok("device", "sensor-02")
    ok("service", "publisher")
    device_serial = load(layout.device("sensor-01")[0]).serial_number
    service_serial = load(layout.service("publisher")[0]).serial_number

    assert f"{device_serial:x}" in ok("revoke", "sensor-01")
    assert f"{service_serial:x}" in ok("revoke", f"{service_serial:X}")  # by serial, any case
    crls = revoked_serials(layout)
    assert crls == {"iot-etl device CA": {device_serial}, "iot-etl service CA": {service_serial}}
    device_crl, service_crl = read_crls(layout)
    assert device_crl.is_signature_valid(load(layout.device_ca_cert).public_key())
    assert service_crl.is_signature_valid(load(layout.service_ca_cert).public_key())

    assert "revoked already" in ok("revoke", "sensor-01")
    table = ok("list")
    rows = {line.split()[2]: line for line in table.splitlines()[1:] if len(line.split()) > 2}
    assert rows[f"{device_serial:x}"].rstrip().endswith("revoked")
    assert rows[f"{service_serial:x}"].rstrip().endswith("revoked")
    sensor_02 = f"{load(layout.device('sensor-02')[0]).serial_number:x}"
    assert rows[sensor_02].rstrip().endswith("valid")


def test_a_name_of_a_device_and_a_service_must_be_qualified(layout: PkiLayout) -> None:
    ok("init")
    ok("device", "listener")
    ok("service", "listener")
    result = certs("revoke", "listener")
    assert result.exit_code == 2 and "device:listener" in result.stderr
    ok("revoke", "device:listener")
    assert revoked_serials(layout)["iot-etl device CA"] == {load(layout.device("listener")[0]).serial_number}
    assert revoked_serials(layout)["iot-etl service CA"] == set()


def test_rotate_keeps_the_old_pair_and_revoke_old_revokes_and_removes_it(layout: PkiLayout) -> None:
    ok("init")
    ok("device", "sensor-01", "--days", "40")
    cert_path, key_path = layout.device("sensor-01")
    first = load(cert_path)
    first_key = key_path.read_bytes()

    ok("rotate", "sensor-01")
    second = load(cert_path)
    assert second.serial_number != first.serial_number and key_path.read_bytes() != first_key
    check_cert_and_key(cert_path, key_path)
    assert second.not_valid_after_utc - second.not_valid_before_utc == dt.timedelta(days=40)
    old_cert = layout.devices_dir / f"sensor-01.{first.serial_number:x}.pem"
    old_key = layout.devices_dir / f"sensor-01.{first.serial_number:x}.key"
    assert load(old_cert) == first and old_key.read_bytes() == first_key
    assert stat.S_IMODE(old_key.stat().st_mode) == 0o600
    assert revoked_serials(layout)["iot-etl device CA"] == set()

    out = ok("rotate", "sensor-01", "--revoke-old")
    assert "revoked" in out
    third = load(cert_path)
    assert revoked_serials(layout)["iot-etl device CA"] == {second.serial_number}
    assert not (layout.devices_dir / f"sensor-01.{second.serial_number:x}.pem").exists()
    assert not (layout.devices_dir / f"sensor-01.{second.serial_number:x}.key").exists()
    statuses = {i.serial: i.status() for i in list_certs(layout)}
    assert statuses == {
        f"{first.serial_number:x}": "valid, replaced",
        f"{second.serial_number:x}": "revoked",
        f"{third.serial_number:x}": "valid",
    }


def test_rotate_a_service_and_the_server_keeps_role_and_sans(layout: PkiLayout) -> None:
    ok("init")
    ok("service", "simulator", "--name", "sim-a")
    ok("server", "--san", "DNS:mqtt.internal")
    ok("rotate", "sim-a")
    ok("rotate", "server")
    cert = load(layout.service("sim-a")[0])
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "simulator"
    sans = load(layout.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["mqtt.internal"]
    check_cert_and_key(layout.server_cert, layout.server_key)


def test_crl_next_update_sets_the_validity(layout: PkiLayout) -> None:
    ok("init")
    before = dt.datetime.now(dt.UTC)
    ok("crl", "--next-update", "2d")
    after = dt.datetime.now(dt.UTC)
    crls = read_crls(layout)
    assert len(crls) == 2
    for crl in crls:
        assert crl.next_update_utc is not None
        assert before + dt.timedelta(days=2) - dt.timedelta(seconds=1) <= crl.next_update_utc
        assert crl.next_update_utc <= after + dt.timedelta(days=2)
    ok("crl", "--next-update", "12h")
    assert all(
        c.next_update_utc and c.next_update_utc <= after + dt.timedelta(hours=13) for c in read_crls(layout)
    )
    numbers = {
        c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number for c in read_crls(layout)
    }
    assert numbers == {3}  # init, 2d, 12h: each CRL re-signed with a higher number


def test_no_key_material_in_any_output(layout: PkiLayout) -> None:
    outputs = [
        certs(*args)
        for args in (
            ("init",),
            ("server",),
            ("device", "sensor-01"),
            ("service", "listener"),
            ("rotate", "sensor-01"),
            ("revoke", "sensor-01"),
            ("crl",),
            ("list",),
            ("device", "Bad"),
        )
    ]
    text = "".join(r.output for r in outputs)
    keys = [*layout.root.rglob("*.key")]
    assert len(keys) >= 5
    for key in keys:
        body = [line for line in key.read_text().splitlines() if not line.startswith("-----")]
        assert all(line not in text for line in body)
    assert "PRIVATE KEY" not in text and "BEGIN" not in text


def test_check_cert_and_key_refuses_non_pem_and_a_foreign_key(layout: PkiLayout, tmp_path: Path) -> None:
    ok("init")
    ok("device", "a")
    ok("device", "b")
    cert_a, key_a = layout.device("a")
    _, key_b = layout.device("b")
    assert check_cert_and_key(cert_a, key_a).serial_number == load(cert_a).serial_number
    with pytest.raises(PkiError, match="is not the key of"):
        check_cert_and_key(cert_a, key_b)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(PkiError, match="is not a PEM certificate"):
        check_cert_and_key(garbage, key_a)
    with pytest.raises(PkiError, match="is not an unencrypted PEM private key") as refused:
        check_cert_and_key(cert_a, cert_a)
    assert "\n" not in str(refused.value)


def test_openssl_agrees_on_chains_and_the_two_crl_file(layout: PkiLayout) -> None:
    ok("init")
    ok("server")
    ok("device", "x")
    ok("device", "gone")
    ok("revoke", "gone")
    root = layout.root
    good = openssl(
        "verify", "-CAfile", "ca/device-ca.pem", "-purpose", "sslclient", "devices/x.pem", cwd=root
    )
    assert good.returncode == 0 and "devices/x.pem: OK" in good.stdout, good.stderr
    foreign = openssl("verify", "-CAfile", "ca/service-ca.pem", "devices/x.pem", cwd=root)
    assert foreign.returncode != 0
    assert openssl("crl", "-in", "crl.pem", "-noout", cwd=root).returncode == 0
    # both CRLs of the file are loaded: one for the device CA, one for the service CA
    crl_check = ("verify", "-crl_check", "-CRLfile", "crl.pem")
    device_ok = openssl(*crl_check, "-CAfile", "ca/device-ca.pem", "devices/x.pem", cwd=root)
    assert device_ok.returncode == 0, device_ok.stdout + device_ok.stderr
    server_ok = openssl(
        *crl_check, "-CAfile", "ca/service-ca.pem", "-purpose", "sslserver", "server.pem", cwd=root
    )
    assert server_ok.returncode == 0, server_ok.stdout + server_ok.stderr
    revoked = openssl(*crl_check, "-CAfile", "ca/device-ca.pem", "devices/gone.pem", cwd=root)
    assert revoked.returncode != 0 and "certificate revoked" in revoked.stdout + revoked.stderr
    # what clients trust to verify the broker
    chain = openssl("verify", "-CAfile", "ca-chain.pem", "-purpose", "sslserver", "server.pem", cwd=root)
    assert chain.returncode == 0, chain.stderr


def test_the_installed_console_script_runs_under_umask_077(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("iot-etl")
    assert script.exists(), f"{script} is missing: install the project (scripts/setup.sh)"
    root = tmp_path / "pki"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")} | {"IOT_PKI_DIR": str(root)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), "certs", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    for args in (("init",), ("device", "sensor-01"), ("list",)):
        result = run(*args)
        assert result.returncode == 0, result.stderr
    assert "sensor-01" in result.stdout
    for path in root.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {mode:o}"
    bad = run("device", "a/b")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "'a/b'" in bad.stderr
    assert not root.joinpath("devices", "a").exists()
