"""Scratch databases on the local PostgreSQL server, one per system and trial."""

from __future__ import annotations

import psycopg
from psycopg import sql

from iot_core.settings import Settings


def database_url(settings: Settings, name: str) -> str:
    """The URL of database `name` on the server of the configured telemetry database."""
    return settings.database_url.get_secret_value().rsplit("/", 1)[0] + "/" + name


def server_url(settings: Settings) -> str:
    """The URL of the server's maintenance database (`postgres`)."""
    return database_url(settings, "postgres")


def create_database(settings: Settings, name: str) -> None:
    with psycopg.connect(server_url(settings), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(settings: Settings, name: str) -> None:
    with psycopg.connect(server_url(settings), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def postmaster_pid(settings: Settings) -> int:
    """The server's main process, whose children are the backends (found through one of them)."""
    import psutil

    with psycopg.connect(server_url(settings), autocommit=True) as conn:
        backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        return psutil.Process(backend).ppid()
