"""PostgreSQL roles with least privilege, made by `iot-etl db migrate` as the schema owner.

The owner (IOT_DATABASE_OWNER_URL) owns the schema, migrates, and runs compaction and retention. The
writer (IOT_DATABASE_URL) reads and writes the product's rows and may use temp tables: no DDL, no TRUNCATE,
no CREATE in the schema, no role attributes. The reader (IOT_DATABASE_READER_URL) may only SELECT, in
read-only transactions. Each role is created where missing with the password of its URL, and its password
is set again on every run (so a changed URL takes effect).

A password reaches the server only as a SCRAM-SHA-256 verifier computed by libpq on this side
(`PQencryptPasswordConn`), quoted with `sql.Literal` (CREATE ROLE takes no parameters), so neither a server
log nor an error message can show it; errors of these statements are re-raised without the statement.

Dagster's storage (IOT_DAGSTER_PG_URL), when it is another database of the same server, is closed to every
role but Dagster's own (and the database's owner): REVOKE CONNECT FROM PUBLIC.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

from iot_core.db_errors import postgres_refusal
from iot_core.errors import UserFacingError
from iot_core.redact import redact_text, redact_url, url_password

#: The schema every product table lives in (the migrations create them unqualified).
SCHEMA = "public"
#: Where TimescaleDB keeps chunks and materialization hypertables (present only with the extension).
TIMESCALE_INTERNAL = "_timescaledb_internal"
WRITER_TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
WRITER_SEQUENCE_PRIVILEGES = "USAGE, SELECT, UPDATE"
#: The migrations' own record: the writer may read it, never change it.
MIGRATIONS_TABLE = "schema_migrations"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a database URL names: a role on a server's database."""

    role: str | None
    password: str | None
    host: str
    port: int
    database: str

    @property
    def server(self) -> tuple[str, int]:
        return (self.host, self.port)


def endpoint(url: str, setting: str) -> Endpoint:
    """The role, server and database of `url`; a URL that does not parse is one line naming `setting`."""
    try:
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError:
        raise UserFacingError(
            f"{setting}={redact_url(url)} is not a database URL",
            "write it as postgresql://role:password@host:port/database",
        ) from None
    host = parts.hostname or "localhost"
    return Endpoint(
        unquote(parts.username) if parts.username else None,
        url_password(url),
        "127.0.0.1" if host == "localhost" else host,
        port,
        unquote(parts.path.lstrip("/")),
    )


@contextmanager
def database_errors(url: str, setting: str) -> Iterator[None]:
    """psycopg errors inside the block become one line naming the URL without its password (and with no
    password in the driver's text, which can quote the connection string). The cause kept for `--debug`'s
    traceback is a copy of the driver's error with the scrubbed text."""
    try:
        yield
    except psycopg.Error as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        text = redact_text(text, [url_password(url)])
        refusal = postgres_refusal(text, setting) if isinstance(exc, psycopg.OperationalError) else None
        if refusal is not None:
            what = f"PostgreSQL at {redact_url(url)} refused the connection: {refusal.said}"
            todo = refusal.todo
        elif isinstance(exc, psycopg.OperationalError):
            what, todo = (
                f"database unreachable at {redact_url(url)}: {text}",
                f"start PostgreSQL or fix {setting}",
            )
        else:
            what, todo = (
                f"database error at {redact_url(url)}: {text}",
                f"check the database behind {setting}",
            )
        raise UserFacingError(what, todo) from type(exc)(text)


@dataclass(frozen=True, slots=True)
class _Owner:
    role: str
    superuser: bool
    createrole: bool


def ensure_roles(
    owner_url: str, writer_url: str, reader_url: str | None = None, dagster_url: str | None = None
) -> list[str]:
    """Create or update the writer and reader roles and grant them least privilege on the owner's
    database; close Dagster's database (same server) to everyone but its role. Returns what was done, one
    line each. Run after the migrations, as the owner."""
    owner_end = endpoint(owner_url, "IOT_DATABASE_OWNER_URL")
    writer = _named(writer_url, "IOT_DATABASE_URL") if writer_url != owner_url else None
    reader = _named(reader_url, "IOT_DATABASE_READER_URL") if reader_url else None
    lines: list[str] = []
    with (
        database_errors(owner_url, "IOT_DATABASE_OWNER_URL"),
        psycopg.connect(owner_url, autocommit=True, connect_timeout=10) as conn,
    ):
        owner = _owner(conn)
        database = conn.info.dbname
        if writer is None or writer.role == owner.role:
            lines.append(
                f"writer: IOT_DATABASE_URL uses the owner role {owner.role} (a developer set-up): no roles "
                "created, the pipeline runs with the owner's privileges"
            )
        else:
            lines += _ensure_login(conn, owner, "writer", writer)
            _grant_writer(conn, database, _role(writer))
        if reader is not None and reader.role == owner.role:
            lines.append(f"reader: IOT_DATABASE_READER_URL uses the owner role {owner.role}: not restricted")
        elif reader is not None:
            lines += _ensure_login(conn, owner, "reader", reader)
            lines += _grant_reader(conn, owner, database, _role(reader))
        if any(e is not None and e.role != owner.role for e in (writer, reader)):
            # CONNECT and TEMPORARY only for the roles granted them above (and the database's owner)
            _execute(conn, sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
        if dagster_url:
            lines += _close_dagster_database(conn, owner, owner_end, dagster_url)
    return lines


def _named(url: str, setting: str) -> Endpoint:
    """The endpoint of a URL that must name its role (libpq's default user is not a role to grant to)."""
    target = endpoint(url, setting)
    if target.role is None:
        raise UserFacingError(
            f"{setting}={redact_url(url)} names no role", "write it as postgresql://role:password@host/db"
        )
    return target


def _role(target: Endpoint) -> str:
    assert target.role is not None
    return target.role


def _owner(conn: psycopg.Connection) -> _Owner:
    row = conn.execute(
        "SELECT current_user, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert row is not None
    return _Owner(row[0], row[1], row[2])


def _execute(conn: psycopg.Connection, statement: sql.Composable) -> None:
    """Run a statement that may hold a password verifier; its failure is re-raised without the
    statement (psycopg's text is the server's message, which names no password)."""
    try:
        conn.execute(statement)
    except psycopg.Error as exc:
        raise type(exc)(" ".join(str(exc).split())) from None


def _role_exists(conn: psycopg.Connection, role: str) -> tuple[bool, bool]:
    """(exists, is a superuser)."""
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    return (row is not None, bool(row and row[0]))


def _ensure_login(conn: psycopg.Connection, owner: _Owner, kind: str, target: Endpoint) -> list[str]:
    """The role of `target` exists and logs in with the URL's password; one line of what was done."""
    name = _role(target)
    role = sql.Identifier(name)
    exists, superuser = _role_exists(conn, name)
    password = sql.SQL("")
    if target.password is not None:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        verifier = conn.pgconn.encrypt_password(
            target.password.encode(), name.encode(), b"scram-sha-256"
        ).decode()
        password = sql.SQL(" PASSWORD {}").format(sql.Literal(verifier))
    if not exists:
        if not (owner.superuser or owner.createrole):
            raise UserFacingError(
                f"the {kind} role {name} does not exist and the owner role {owner.role} may not create roles",
                f"create it yourself or grant {owner.role} CREATEROLE, then run `iot-etl db migrate` again",
            )
        _execute(conn, sql.SQL("CREATE ROLE {} LOGIN NOINHERIT").format(role) + password)
        return [f"{kind}: role {name} created" + ("" if target.password else " (no password in its URL)")]
    if superuser:
        return [
            f"{kind}: role {name} is a superuser, so no grant limits it; use a role of its own "
            "for least privilege"
        ]
    if target.password is None:
        return [f"{kind}: role {name} exists (no password in its URL: left as it is)"]
    if not (owner.superuser or owner.createrole):
        return [f"{kind}: role {name} exists; {owner.role} may not set its password (left as it is)"]
    try:
        _execute(conn, sql.SQL("ALTER ROLE {} LOGIN").format(role) + password)
    except psycopg.errors.InsufficientPrivilege as exc:
        return [f"{kind}: role {name} exists; its password was not set: {exc}"]
    return [f"{kind}: role {name} exists, password set from its URL"]


def _on_all(privileges: str, kind: str, grantee: str) -> list[sql.Composable]:
    """GRANT on every existing object of `kind` (TABLES, SEQUENCES) in the schema and on future ones the
    owner creates (the migrations to come)."""
    args = {"privileges": sql.SQL(privileges), "kind": sql.SQL(kind), "schema": sql.Identifier(SCHEMA)}
    grantee_id = sql.Identifier(grantee)
    return [
        sql.SQL("GRANT {privileges} ON ALL {kind} IN SCHEMA {schema} TO {grantee}").format(
            grantee=grantee_id, **args
        ),
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT {privileges} ON {kind} TO {grantee}"
        ).format(grantee=grantee_id, **args),
    ]


def _has_timescaledb(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None


def _grant_writer(conn: psycopg.Connection, database: str, writer: str) -> None:
    """Rows of every product table, the sequences, temp tables; nothing else. The owner's default
    privileges cover the tables of migrations to come (and TimescaleDB's chunks, made as the owner,
    take the grants of their hypertable)."""
    role = sql.Identifier(writer)
    statements: list[sql.Composable] = [
        sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(SCHEMA)),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(SCHEMA), role),
        sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(sql.Identifier(database), role),
        *_on_all(WRITER_TABLE_PRIVILEGES, "TABLES", writer),
        *_on_all(WRITER_SEQUENCE_PRIVILEGES, "SEQUENCES", writer),
        sql.SQL("REVOKE INSERT, UPDATE, DELETE ON {} FROM {}").format(sql.Identifier(MIGRATIONS_TABLE), role),
    ]
    _grant_all(conn, role, statements)


def _grant_all(conn: psycopg.Connection, role: sql.Identifier, statements: list[sql.Composable]) -> None:
    """Run a role's grants in one transaction, with USAGE on TimescaleDB's internal schema where it exists
    (chunks of hypertables live there)."""
    if _has_timescaledb(conn):
        statements.append(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(TIMESCALE_INTERNAL), role)
        )
    with conn.transaction():
        for statement in statements:
            _execute(conn, statement)


def _grant_reader(conn: psycopg.Connection, owner: _Owner, database: str, reader: str) -> list[str]:
    """SELECT on the product's tables, CONNECT, and read-only transactions by default."""
    role = sql.Identifier(reader)
    statements: list[sql.Composable] = [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(SCHEMA), role),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), role),
        *_on_all("SELECT", "TABLES", reader),
    ]
    _grant_all(conn, role, statements)
    if not (owner.superuser or owner.createrole):
        return [f"reader: {owner.role} may not set {reader}'s default_transaction_read_only (left as it is)"]
    _execute(conn, sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(role))
    return []


def _close_dagster_database(
    conn: psycopg.Connection, owner: _Owner, owner_end: Endpoint, dagster_url: str
) -> list[str]:
    """Dagster's database on the owner's server: CONNECT for Dagster's role only (and the database's
    owner, who keeps it by ownership). Done as the owner when it may (superuser or owner of that database),
    else as Dagster's role when that owns it, else left as it is with a line saying so."""
    dagster = endpoint(dagster_url, "IOT_DAGSTER_PG_URL")
    if dagster.server != owner_end.server:
        return []
    if dagster.database == conn.info.dbname:
        return [
            "dagster: IOT_DAGSTER_PG_URL names the product's database; give Dagster a database of its own"
        ]
    row = conn.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (dagster.database,)
    ).fetchone()
    if row is None:
        return []  # `db migrate` creates it afterwards; the next run closes it
    db_owner = row[0]
    name = sql.Identifier(dagster.database)
    statements = [sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(name)]
    if dagster.role and dagster.role != db_owner:
        statements.append(
            sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                name, sql.Identifier(dagster.role)
            )
        )
    if owner.superuser or db_owner == owner.role:
        with conn.transaction():
            for statement in statements:
                _execute(conn, statement)
    elif db_owner == dagster.role:
        with (
            database_errors(dagster_url, "IOT_DAGSTER_PG_URL"),
            psycopg.connect(dagster_url, autocommit=True, connect_timeout=10) as own,
            own.transaction(),
        ):
            for statement in statements:
                _execute(own, statement)
    else:
        return [
            f"dagster: neither {owner.role} nor Dagster's role owns database {dagster.database} (owned by "
            f"{db_owner}); run REVOKE CONNECT ON DATABASE {dagster.database} FROM PUBLIC as its owner"
        ]
    return [f"dagster: database {dagster.database} accepts only {dagster.role or db_owner} and its owner"]
