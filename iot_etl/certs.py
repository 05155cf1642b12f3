"""`iot-etl certs`: the device CA, the service CA and the certificates they issue (state in IOT_PKI_DIR).

Every command runs under umask 077 and prints one line per file it writes, never key material. Bad input
(an invalid device id, an unknown role, a command before `certs init`, an unknown certificate) is one
line on stderr and exit 2, checked before anything is written.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from cryptography import x509

from iot_core.pki_crl import crl_next_update, revoke, write_crl
from iot_core.pki_errors import PkiError
from iot_core.pki_index import list_certs
from iot_core.pki_issue import (
    DEVICE_DAYS,
    SERVER_DAYS,
    SERVICE_DAYS,
    init_pki,
    issue_device,
    issue_server,
    issue_service,
    rotate,
)
from iot_core.pki_layout import SERVICE_ROLES, PkiLayout
from iot_core.pki_x509 import san_texts
from iot_core.settings import get_settings


class CertsError(click.ClickException):
    """Refused input: one line on stderr, exit 2 (like a usage error, without the `--help` hint)."""

    exit_code = 2


@contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except PkiError as exc:
        raise CertsError(str(exc)) from None


def _layout() -> PkiLayout:
    return PkiLayout(get_settings().pki_dir)


_DURATION = re.compile(r"(\d+)([wdhms])")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(text: str) -> dt.timedelta:
    """`30d`, `12h`, `1d12h`, `90m`, `2w`, `45s` -> timedelta; ValueError naming the text otherwise."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration; give e.g. 30d, 12h, 1d12h or 90m")
    total = sum((dt.timedelta(**{_UNITS[u]: int(n)}) for n, u in parts), dt.timedelta())
    if total <= dt.timedelta(0):
        raise ValueError(f"{text!r} is not a positive duration; give e.g. 30d or 12h")
    if total > dt.timedelta(days=3650):
        raise ValueError(f"{text!r} is longer than 3650 days; give a shorter CRL validity")
    return total


def _duration_option(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise CertsError(f"--next-update {exc}") from None


def _wrote(what: str, cert_path: Path, key_path: Path, cert: x509.Certificate) -> None:
    click.echo(
        f"{what}: wrote {cert_path} and {key_path} (serial {cert.serial_number:x}, "
        f"valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)"
    )


@click.group("certs")
@click.pass_context
def certs(ctx: click.Context) -> None:
    """The device CA and service CA, and the certificates they issue (in IOT_PKI_DIR)."""
    previous = os.umask(0o077)
    ctx.call_on_close(lambda: os.umask(previous))


@certs.command("init")
def init_command() -> None:
    """Create the device CA and the service CA (independent roots), ca-chain.pem and the CRL."""
    settings = get_settings()
    layout = PkiLayout(settings.pki_dir)
    with _refusals():
        created = init_pki(layout, crl_days=settings.crl_days)
    if created:
        click.echo(
            f"certs: wrote {layout.device_ca_cert}, {layout.device_ca_key}, {layout.service_ca_cert}, "
            f"{layout.service_ca_key}, {layout.ca_chain}, {layout.crl}"
        )
    else:
        click.echo(f"certs: the CAs in {layout.root} exist already; nothing replaced")


@certs.command("server")
@click.option(
    "--san",
    "sans",
    multiple=True,
    metavar="DNS:NAME|IP:ADDR",
    help="Subject alternative name (repeatable; default DNS:localhost, IP:127.0.0.1, IP:::1).",
)
@click.option("--days", type=click.IntRange(1, 3650), default=SERVER_DAYS, show_default=True)
def server_command(sans: tuple[str, ...], days: int) -> None:
    """Issue the broker's certificate (service CA, serverAuth); replaces an existing one."""
    layout = _layout()
    with _refusals():
        cert = issue_server(layout, list(sans), days=days)
    _wrote(f"server ({', '.join(san_texts(cert))})", layout.server_cert, layout.server_key, cert)


@certs.command("device")
@click.argument("device_id", metavar="ID")
@click.option("--days", type=click.IntRange(1, 3650), default=DEVICE_DAYS, show_default=True)
def device_command(device_id: str, days: int) -> None:
    """Issue a device certificate (device CA, CN = ID) in devices/ID.pem and devices/ID.key."""
    layout = _layout()
    with _refusals():
        cert = issue_device(layout, device_id, days=days)
    _wrote(f"device {device_id}", *layout.device(device_id), cert)


@certs.command("service")
@click.argument("role", metavar="|".join(SERVICE_ROLES))
@click.option("--name", default=None, help="Certificate name (default: the role); CN = iot-etl-NAME.")
@click.option("--days", type=click.IntRange(1, 3650), default=SERVICE_DAYS, show_default=True)
def service_command(role: str, name: str | None, days: int) -> None:
    """Issue a service certificate (service CA, OU = ROLE) in services/NAME.pem and services/NAME.key."""
    layout = _layout()
    with _refusals():
        cert = issue_service(layout, role, name, days=days)
    _wrote(f"service {name or role} ({role})", *layout.service(name or role), cert)


@certs.command("revoke")
@click.argument("target", metavar="ID|SERIAL")
def revoke_command(target: str) -> None:
    """Revoke a device's (or service's) certificates, or one by hex serial, and re-sign the CRL.

    The broker refuses them at their next connect; `iot-etl up` restarts it so live sessions end too.
    """
    layout = _layout()
    with _refusals():
        serials = revoke(layout, target, next_update=dt.timedelta(days=get_settings().crl_days))
    if serials:
        click.echo(f"revoked {target}: serial {', '.join(serials)}; wrote {layout.crl}")
    else:
        click.echo(f"{target}: every certificate is revoked already; nothing written")


@certs.command("crl")
@click.option(
    "--next-update",
    callback=_duration_option,
    metavar="DURATION",
    help="How long the CRL is valid, e.g. 30d or 12h (default: IOT_CRL_DAYS days).",
)
def crl_command(next_update: dt.timedelta | None) -> None:
    """Re-sign both CAs' CRLs into crl.pem (an expired CRL makes the broker refuse every client)."""
    settings = get_settings()
    layout = PkiLayout(settings.pki_dir)
    with _refusals():
        write_crl(layout, next_update or dt.timedelta(days=settings.crl_days))
    until = crl_next_update(layout)
    click.echo(f"wrote {layout.crl} (next update {until:%Y-%m-%d %H:%M} UTC)")


@certs.command("rotate")
@click.argument("target", metavar="ID")
@click.option("--revoke-old", is_flag=True, help="Revoke the old certificate and delete its files.")
def rotate_command(target: str, revoke_old: bool) -> None:
    """New key and certificate for a device, service or `server`; the old pair is kept as NAME.SERIAL.pem."""
    settings = get_settings()
    layout = PkiLayout(settings.pki_dir)
    with _refusals():
        cert = rotate(layout, target, revoke_old, next_update=dt.timedelta(days=settings.crl_days))
    info = next(i for i in list_certs(layout) if i.serial == f"{cert.serial_number:x}")
    assert info.path is not None
    _wrote(f"rotated {target}", info.path, info.path.with_suffix(".key"), cert)
    if revoke_old:
        click.echo(f"revoked the old certificate and deleted its files; wrote {layout.crl}")


@certs.command("list")
def list_command() -> None:
    """Every certificate issued: kind, name, serial, not after, status."""
    layout = _layout()
    with _refusals():
        infos = list_certs(layout)
    rows = [("KIND", "NAME", "SERIAL", "NOT AFTER", "STATUS")]
    rows += [(i.kind, i.name, i.serial, f"{i.not_after:%Y-%m-%d %H:%M}", i.status()) for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]))
    until = crl_next_update(layout)
    click.echo(
        f"CRL: next update {until:%Y-%m-%d %H:%M} UTC" if until else "CRL: none; run `iot-etl certs crl`"
    )
