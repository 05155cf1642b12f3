"""Ordered SQL migrations from `sql/`, each applied once and recorded in `schema_migrations`."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_LOCK_KEY = 0x10E7_E71  # advisory lock: two migrators never interleave


#: Whole-file checksums recorded by releases that hashed comments too, or whose 004 created the extension
#: without checking that it is preloaded; databases migrated by them stay valid.
RELEASED_CHECKSUMS: dict[str, tuple[str, ...]] = {
    "001": ("4120b405d36d2f5b77e9799ecbf83d6507e8d90c0458e6c76ce65e78e6b8f471",),
    "002": ("423a3bad50d654052eb28aa09f4017a4658e46cbedb4ccface90cf2020649715",),
    "003": ("540f0c5eeb112227bbcee5cee9e9d8b1942c968c5636437005570e32031deac4",),
    "004": ("971c53fd061f7a5aed5d8e5161c85d12e1746a3165ef714a0c775108b2ce6d85",),
}


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        """Of the statements only: editing a comment does not change a migration."""
        statements = "\n".join(
            line.rstrip()
            for line in self.text.splitlines()
            if line.strip() and not line.lstrip().startswith("--")
        )
        return hashlib.sha256(statements.encode()).hexdigest()

    def accepts(self, recorded: str) -> bool:
        """Whether a recorded checksum is this migration's, now or as released before."""
        return recorded == self.checksum or recorded in RELEASED_CHECKSUMS.get(self.version, ())


def discover(sql_dir: Path = SQL_DIR) -> list[Migration]:
    """`NNN_name.sql` files in version order; the number prefix is the version."""
    found = []
    for path in sorted(sql_dir.glob("*.sql")):
        version, sep, _ = path.stem.partition("_")
        if not sep or not version.isdigit():
            raise MigrationError(f"{path.name}: migration files are named NNN_description.sql")
        found.append(Migration(version, path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {sql_dir}: {versions}")
    return found


def ensure_database(database_url: str) -> bool:
    """Create the target database when the server does not have it yet; True when it was created."""
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    name = info.get("dbname")
    if not name:
        raise MigrationError(f"the database URL names no database: {database_url!r}")
    try:
        with psycopg.connect(database_url, connect_timeout=5):
            return False
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
    admin = psycopg.conninfo.make_conninfo(database_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    log.info("created database %s", name)
    return True


def apply_migrations(
    database_url: str, sql_dir: Path = SQL_DIR, progress: Callable[[int, int], None] | None = None
) -> list[str]:
    """Apply the pending migrations in order, each in its own transaction; returns their versions.

    `progress(done, pending)` is called once the pending ones are known and after each one applied."""
    migrations = discover(sql_dir)
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version text PRIMARY KEY, filename text NOT NULL, checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
            pending = sum(1 for m in migrations if m.version not in done)
            if progress is not None:
                progress(0, pending)
            for migration in migrations:
                if migration.version in done:
                    if not migration.accepts(done[migration.version]):
                        raise MigrationError(
                            f"{migration.path.name} changed after it was applied; add a new migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.text)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, filename, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.path.name, migration.checksum),
                    )
                log.info("applied migration %s", migration.path.name)
                applied_now.append(migration.version)
                if progress is not None:
                    progress(len(applied_now), pending)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def has_timescaledb(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return row is not None
