"""The PostgreSQL server the test suite uses, chosen by one setting.

`IOT_TEST_PG_SERVER` (default `postgresql://postgres@127.0.0.1:5432`) names a server, not a database:
every test creates its own databases there and drops them afterwards, so the same suite runs against a
plain PostgreSQL or a TimescaleDB server.
"""

from __future__ import annotations

import os

import psycopg

PG_SERVER = os.environ.get("IOT_TEST_PG_SERVER", "postgresql://postgres@127.0.0.1:5432").rstrip("/")


def database_url(name: str) -> str:
    """The URL of database `name` on the test server."""
    return f"{PG_SERVER}/{name}"


def drop_database(name: str) -> None:
    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_preloads_timescaledb() -> bool:
    """Whether the test server loads TimescaleDB (the suite then runs the TimescaleDB path)."""
    with psycopg.connect(database_url("postgres")) as conn:
        row = conn.execute("SHOW shared_preload_libraries").fetchone()
    return bool(row and "timescaledb" in row[0])
