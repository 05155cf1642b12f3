"""Ordered SQL migrations from `sql/`, each applied once and recorded in `schema_migrations`."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_LOCK_KEY = 0x10E7_E71  # advisory lock: two migrators never interleave


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
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


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


def apply_migrations(database_url: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply the pending migrations in order, each in its own transaction; returns their versions."""
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
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
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
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def has_timescaledb(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return row is not None
