"""Run Mosquitto with the project's configuration (`iot-etl broker`, `iot-etl up --with-broker`).

Two variants: the plain broker of a trusted network (`write_broker_config`), and, with IOT_SECURITY, the
broker of devices with certificates (`write_secure_broker_config`, also behind `iot-etl broker-config --tls
--out DIR`): its configuration, its two ACL files and copies of the certificates, key and CRL it reads, all
in one directory.

Who reads that directory: Mosquitto started as root drops to the `mosquitto` user before it opens any of
them (measured on 2.0.11: certificates, ACL files and the CRL are opened after the switch; only the
configuration file itself is read as root). So, when we run as root and that user exists, the directory is
`root:mosquitto 0750`, its files `root:mosquitto 0640` (the broker reads them and cannot change them;
nobody else can read them) and the persistence folder `mosquitto:mosquitto 0700`; otherwise (the broker
runs as us) everything is ours with 0700/0600. Every folder above the directory must let that user pass
(a root folder with mode 0700 blocks it): that is checked before anything is written.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import secrets
import shutil
import stat
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from iot_core.errors import UserFacingError
from iot_core.pki_crl import read_crls
from iot_core.pki_errors import PkiError
from iot_core.pki_layout import PkiLayout
from iot_core.pki_pair import check_cert_and_key
from iot_core.settings import Settings
from iot_etl.broker_config import render_broker_config
from iot_etl.broker_values import ConfigValueError, config_path
from iot_etl.tls_broker_config import TlsFiles, render_tls_broker_config

#: The user Mosquitto switches to when started as root (and no `user` line says otherwise).
BROKER_USER = "mosquitto"
CONF_NAME = "mosquitto.conf"
DATA_NAME = "data"


class BrokerNotInstalledError(RuntimeError):
    pass


class BrokerConfigError(UserFacingError):
    """The TLS broker's files cannot be written (a bad value, a missing or broken PKI); nothing written."""

    def __init__(self, line: str) -> None:
        what, _, todo = line.partition("; ")
        super().__init__(what, todo or "fix it and run again")


def write_broker_config(settings: Settings, workdir: Path) -> Path:
    """The generated mosquitto.conf (persistence under `workdir`), on the configured MQTT host and port."""
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    text = render_broker_config(
        port=settings.mqtt_port,
        bind=settings.mqtt_host,
        persistence_dir=data,
        max_queued_bytes=settings.broker_max_queued_bytes,
    )
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # as root, mosquitto would switch to the `mosquitto` user, who cannot write our directory
        text += "\nuser root\n"
    path = workdir / "mosquitto.conf"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(frozen=True)
class BrokerAccount:
    """Who owns what the TLS broker reads: (uid, gid) of the files, the folder and the persistence folder."""

    file_uid: int
    file_gid: int
    data_uid: int
    data_gid: int
    shared: bool  # True: the broker reads through the group (root:mosquitto 0640); False: all ours, 0600

    @property
    def file_mode(self) -> int:
        return 0o640 if self.shared else 0o600

    @property
    def dir_mode(self) -> int:
        return 0o750 if self.shared else 0o700


def broker_account() -> BrokerAccount:
    """The ownership for a broker started by this process's user (see the module docstring)."""
    me, group = os.geteuid(), os.getegid()
    if me == 0:
        try:
            user = pwd.getpwnam(BROKER_USER)
        except KeyError:
            pass
        else:
            return BrokerAccount(0, user.pw_gid, user.pw_uid, user.pw_gid, shared=True)
    return BrokerAccount(me, group, me, group, shared=False)


def _may_pass(info: os.stat_result, uid: int, gid: int) -> bool:
    if uid == 0:
        return True
    mode = info.st_mode
    if info.st_uid == uid:
        return bool(mode & stat.S_IXUSR)
    if info.st_gid == gid:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


def _check_reachable(directory: Path, account: BrokerAccount) -> None:
    """Every existing folder above `directory` lets the broker's user pass; BrokerConfigError otherwise."""
    for parent in reversed(directory.parents):
        try:
            info = parent.stat()
        except FileNotFoundError:
            return  # created by us below, with our modes
        if not _may_pass(info, account.data_uid, account.data_gid):
            owner = pwd.getpwuid(info.st_uid).pw_name if _known_uid(info.st_uid) else str(info.st_uid)
            raise BrokerConfigError(
                f"the broker's user {BROKER_USER} cannot pass through {parent} (mode "
                f"{stat.S_IMODE(info.st_mode):04o}, owner {owner}) to reach {directory}; choose a directory "
                f"it can reach, or let it pass (chmod o+x {parent}, or chgrp {BROKER_USER} and chmod g+x)"
            )


def _known_uid(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


@dataclass(frozen=True)
class _PkiFiles:
    """The bytes of what the broker needs from the PKI, read and checked before anything is written."""

    device_ca: bytes
    service_ca: bytes
    server_cert: bytes
    server_key: bytes
    crl: bytes
    services: dict[str, str]


def _read_ca(path: Path, what: str) -> tuple[bytes, x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BrokerConfigError(f"cannot read the {what} {path}: {exc.strerror}; check IOT_PKI_DIR") from None
    try:
        return data, x509.load_pem_x509_certificate(data)
    except ValueError:
        raise BrokerConfigError(
            f"the {what} {path} is not a PEM certificate; restore it or recreate the PKI (iot-etl certs init)"
        ) from None


def _read_pki(layout: PkiLayout, now: dt.datetime) -> _PkiFiles:
    root = layout.root
    if not layout.initialized():
        raise BrokerConfigError(
            f"no CA in IOT_PKI_DIR {str(root)!r}; run `iot-etl certs init` first (or set IOT_PKI_DIR)"
        )
    device_ca, device_ca_cert = _read_ca(layout.device_ca_cert, "device CA certificate")
    service_ca, service_ca_cert = _read_ca(layout.service_ca_cert, "service CA certificate")
    if not (layout.server_cert.is_file() and layout.server_key.is_file()):
        raise BrokerConfigError(
            f"no broker certificate in {root}; run `iot-etl certs server --san DNS:<broker host> ...` first"
        )
    try:
        check_cert_and_key(layout.server_cert, layout.server_key)
        crls = read_crls(layout)
    except PkiError as exc:
        raise BrokerConfigError(str(exc)) from None
    except ValueError:
        raise BrokerConfigError(
            f"the revocation list {layout.crl} is not PEM; re-sign it with `iot-etl certs crl`"
        ) from None
    issuers = {crl.issuer for crl in crls}
    for what, ca in (("device CA", device_ca_cert), ("service CA", service_ca_cert)):
        if ca.subject not in issuers:
            raise BrokerConfigError(
                f"{layout.crl} holds no revocation list of the {what} (the broker would refuse its "
                "certificates); run `iot-etl certs crl`"
            )
    expired = [crl for crl in crls if crl.next_update_utc is not None and crl.next_update_utc <= now]
    if expired:
        raise BrokerConfigError(
            f"the revocation list {layout.crl} expired at {expired[0].next_update_utc:%Y-%m-%d %H:%M} UTC "
            "(the broker would refuse every client); re-sign it with `iot-etl certs crl`"
        )
    return _PkiFiles(
        device_ca=device_ca,
        service_ca=service_ca,
        server_cert=layout.server_cert.read_bytes(),
        server_key=layout.server_key.read_bytes(),
        crl=layout.crl.read_bytes(),
        services=layout.service_names(),
    )


def _layout(settings: Settings) -> PkiLayout:
    return PkiLayout(settings.pki_dir.expanduser().resolve())


def check_broker_pki(settings: Settings) -> None:
    """BrokerConfigError (one line) when IOT_PKI_DIR lacks what the TLS broker needs or holds it broken."""
    _read_pki(_layout(settings), dt.datetime.now(dt.UTC))


def _write_file(path: Path, data: bytes, account: BrokerAccount) -> None:
    """Replace `path` atomically (a running broker never reads half a file), owned and moded as the broker
    needs."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if account.shared:
                os.fchown(out.fileno(), account.file_uid, account.file_gid)
            os.fchmod(out.fileno(), account.file_mode)
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _own_dir(path: Path, uid: int, gid: int, mode: int, account: BrokerAccount) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if account.shared:
        os.chown(path, uid, gid)
    os.chmod(path, mode)


def write_secure_broker_config(
    settings: Settings,
    workdir: Path,
    *,
    all_interfaces: bool = False,
    persistence_dir: Path | None = None,
) -> Path:
    """Write the TLS broker's directory and return its `mosquitto.conf` (for `mosquitto -c`).

    `workdir` gets `mosquitto.conf`, `acl-devices`, `acl-services`, copies of the device CA, the service CA,
    the server certificate and key and the CRL (`TlsFiles.in_dir`), and the persistence folder `data/`
    (unless `persistence_dir` names another, which is created the same way). The device listener binds
    IOT_MQTT_HOST (0.0.0.0 with `all_interfaces`) on IOT_MQTT_TLS_PORT, the service listener
    IOT_MQTT_SERVICE_HOST:IOT_MQTT_SERVICE_PORT; the ACL of the service listener has a block for every
    service certificate of the PKI. Calling it again refreshes everything (a new CRL, a new service) and
    keeps the sessions in the persistence folder; a running broker reads the new CRL and ACLs on SIGHUP.

    Everything is checked first: a value that would inject lines, a PKI without CAs, a certificate that is
    not PEM, a key that does not match the server certificate, a missing or expired CRL, a folder above
    `workdir` the broker's user cannot pass raise BrokerConfigError (one line) and nothing is written.
    """
    account = broker_account()
    layout = _layout(settings)
    workdir = workdir.expanduser().absolute()
    data = persistence_dir.expanduser().absolute() if persistence_dir else workdir / DATA_NAME
    try:
        config_path("the output directory", workdir)
        files = TlsFiles.in_dir(workdir)
        pki = _read_pki(layout, dt.datetime.now(dt.UTC))
        rendered = render_tls_broker_config(
            device_port=settings.mqtt_tls_port,
            device_bind="0.0.0.0" if all_interfaces else settings.mqtt_host,
            service_port=settings.mqtt_service_port,
            service_bind=settings.mqtt_service_host,
            files=files,
            services=pki.services,
            persistence_dir=data,
            max_queued_bytes=settings.broker_max_queued_bytes,
            max_payload_bytes=settings.max_payload_bytes,
            ack_topic_template=settings.ack_topic_template,
            deadletter_topic=settings.deadletter_topic,
        )
    except (ConfigValueError, PkiError) as exc:
        raise BrokerConfigError(str(exc)) from None
    if workdir.exists() and not workdir.is_dir():
        raise BrokerConfigError(f"{workdir} is not a directory; choose another output directory")
    _check_reachable(workdir, account)
    if not data.is_relative_to(workdir):
        _check_reachable(data, account)

    _own_dir(workdir, account.file_uid, account.file_gid, account.dir_mode, account)
    _own_dir(data, account.data_uid, account.data_gid, 0o700, account)
    for path, content in (
        (files.device_ca, pki.device_ca),
        (files.service_ca, pki.service_ca),
        (files.server_cert, pki.server_cert),
        (files.server_key, pki.server_key),
        (files.crl, pki.crl),
        (files.acl_devices, rendered.acl_devices.encode()),
        (files.acl_services, rendered.acl_services.encode()),
        (workdir / CONF_NAME, rendered.conf.encode()),
    ):
        _write_file(path, content, account)
    return workdir / CONF_NAME


def _mosquitto() -> str:
    binary = shutil.which("mosquitto")
    if binary is None:
        raise BrokerNotInstalledError(
            "mosquitto is not on PATH (Debian: apt-get install mosquitto, which puts it in /usr/sbin)"
        )
    return binary


def broker_argv(settings: Settings, workdir: Path) -> list[str]:
    """`mosquitto -c <config written into workdir>`: with IOT_SECURITY the TLS broker, else the plain one."""
    binary = _mosquitto()
    if settings.security:
        return [binary, "-c", str(write_secure_broker_config(settings, workdir))]
    return [binary, "-c", str(write_broker_config(settings, workdir))]
