"""A scratch Dagster instance (SQLite or PostgreSQL storage, as `iot-etl up` writes it) and product
database for the runs-UI benchmark, their size on disk, and their removal."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from pydantic import SecretStr

from iot_core.settings import Settings
from iot_etl.dagster_instance import create_instance_storage, dagster_env, write_instance_config
from iot_etl.migrate import apply_migrations, ensure_database


@dataclass(frozen=True, slots=True)
class Scratch:
    settings: Settings
    home: Path
    server: str

    @property
    def storage(self) -> str:
        return "postgres" if self.settings.dagster_pg_url else "sqlite"

    def env(self) -> dict[str, str]:
        """What a Dagster process (the webserver) needs besides its IOT_* settings."""
        return {"DAGSTER_HOME": str(self.home), **dagster_env(self.settings)}

    def disk_bytes(self) -> int:
        """The Dagster storage's size: its SQLite files, or its PostgreSQL database."""
        if self.settings.dagster_pg_url:
            name = self.settings.dagster_pg_url.get_secret_value().rsplit("/", 1)[-1]
            with psycopg.connect(f"{self.server}/postgres") as conn:
                row = conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone()
            return int(row[0]) if row else 0
        return sum(p.stat().st_size for p in (self.home / "storage").rglob("*") if p.is_file())

    def files(self) -> int:
        """How many files the storage holds (SQLite keeps one database per run)."""
        if self.settings.dagster_pg_url:
            return 0
        return sum(1 for p in (self.home / "storage").rglob("*") if p.is_file())


def _drop(server: str, name: str) -> None:
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_instance(storage: str, server: str, partitions_start: str, keep: bool) -> Iterator[Scratch]:
    """A migrated product database and a fresh Dagster home (plus database, for `postgres`), all named
    `runsui_<hex>`; removed afterwards unless `keep`."""
    tag = f"runsui_{uuid.uuid4().hex[:8]}"
    home = Path(tempfile.mkdtemp(prefix=f"{tag}_home_"))
    product_db, dagster_db = f"{tag}_iot", f"{tag}_dagster"
    updates: dict[str, object] = {
        "database_url": SecretStr(f"{server}/{product_db}"),
        "dagster_home": home,
        "partitions_start": partitions_start,
        "stream_prefix": f"{tag}:raw",
    }
    if storage == "postgres":
        updates["dagster_pg_url"] = SecretStr(f"{server}/{dagster_db}")
    settings = Settings().model_copy(update=updates)
    try:
        ensure_database(f"{server}/{product_db}")
        apply_migrations(f"{server}/{product_db}")
        if storage == "postgres":
            ensure_database(f"{server}/{dagster_db}")
        write_instance_config(settings)
        create_instance_storage(home)
        yield Scratch(settings, home, server)
    finally:
        if not keep:
            _drop(server, product_db)
            _drop(server, dagster_db)
            shutil.rmtree(home, ignore_errors=True)
