"""Ordered SQL migrations from `sql/`, each applied once and recorded in `schema_migrations`."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from dagster_project.lib.chunks import enable_raw_id_skipping
from dagster_project.lib.retention import continuous_aggregates
from iot_core.redact import redact_url

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_LOCK_KEY = 0x10E7_E71  # advisory lock: two migrators never interleave


#: Checksums recorded by earlier releases: whole-file ones of releases that hashed comments too; of 004 also
#: the release whose 004 created the extension without checking that it is preloaded, and the one whose
#: 004 read `shared_preload_libraries` (which a schema owner that is no superuser may not) and added
#: policies of its own. Databases migrated by them stay valid.
RELEASED_CHECKSUMS: dict[str, tuple[str, ...]] = {
    "001": ("4120b405d36d2f5b77e9799ecbf83d6507e8d90c0458e6c76ce65e78e6b8f471",),
    "002": ("423a3bad50d654052eb28aa09f4017a4658e46cbedb4ccface90cf2020649715",),
    "003": ("540f0c5eeb112227bbcee5cee9e9d8b1942c968c5636437005570e32031deac4",),
    "004": (
        "971c53fd061f7a5aed5d8e5161c85d12e1746a3165ef714a0c775108b2ce6d85",
        "b45013a7ac57466515e5c6d3f7c56ae29256234197ae3faa0003b02dd7a83480",
    ),
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
        raise MigrationError(f"the database URL names no database: {redact_url(database_url)}")
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
    database_url: str,
    sql_dir: Path = SQL_DIR,
    progress: Callable[[int, int], None] | None = None,
    report: Callable[[str], None] | None = None,
) -> list[str]:
    """Apply the pending migrations in order, each in its own transaction; returns their versions. Then
    adopt TimescaleDB where the server has gained it since (see `adopt_timescaledb`).

    `progress(done, pending)` is called once the pending ones are known and after each one applied;
    `report(line)` with each change the adoption made, or why it made none."""
    migrations = discover(sql_dir)
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        with _unlocked_after(conn):
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
            for line in adopt_timescaledb(conn):
                log.info("timescaledb: %s", line)
                if report is not None:
                    report(line)
    return applied_now


@contextmanager
def _unlocked_after(conn: psycopg.Connection) -> Iterator[None]:
    """Release the migration lock when the block ends. When the block failed, its error is the one
    raised: an unlock that fails too (the connection is gone) is only logged."""
    try:
        yield
    except BaseException:
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
        except psycopg.Error as exc:
            log.warning("could not release the migration lock after the failure: %s", exc)
        raise
    conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def adopt_timescaledb(conn: psycopg.Connection) -> list[str]:
    """Make the database what the migrations would have made had TimescaleDB been there when 004 ran:
    `iot_adopt_timescaledb()` (sql/010, sql/021) converts what is not converted yet, in one transaction.
    Then a continuous aggregate `hourly_rollups` that is empty while `measurements` has numeric readings
    (just created, or its first fill failed) is filled, outside a transaction block as TimescaleDB
    requires. Then chunk skipping by raw id is turned on (`chunks.enable_raw_id_skipping`), before the
    first chunk is compressed in a new database. `conn` is in autocommit mode. Returns what was done (or
    why nothing was), one line each; no line when nothing was to do or the function is not there yet."""
    if conn.execute("SELECT to_regprocedure('iot_adopt_timescaledb()')").fetchone() == (None,):
        return []
    with conn.transaction():
        lines = [line for (line,) in conn.execute("SELECT * FROM iot_adopt_timescaledb()").fetchall()]
    if "hourly_rollups" in continuous_aggregates(conn) and _rollups_unfilled(conn):
        conn.execute("CALL refresh_continuous_aggregate('hourly_rollups', NULL, NULL)")
        (rows,) = conn.execute("SELECT count(*) FROM hourly_rollups").fetchone() or (0,)
        lines.append(f"hourly_rollups: filled from measurements ({rows} rows)")
    return lines + enable_raw_id_skipping(conn)


def _rollups_unfilled(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        """SELECT NOT EXISTS (SELECT 1 FROM hourly_rollups)
                  AND EXISTS (SELECT 1 FROM measurements WHERE value_num IS NOT NULL)"""
    ).fetchone()
    return bool(row and row[0])
