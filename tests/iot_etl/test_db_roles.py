"""PostgreSQL roles with least privilege: `iot-etl db migrate` as the owner makes the writer and reader, the
pipeline (a micro-batch, a backfill hour, compaction) runs as the writer with the owner's URL for what needs
ownership, and no database error shows a password.

On the suite's server (trust authentication: passwords are not checked there, privileges are), with roles
and databases of this module's own, dropped at the end: an owner that is no superuser (CREATEDB,
CREATEROLE), the writer and reader `db migrate` creates, and a scratch Dagster database with its own role.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from dagster import DagsterInstance, materialize
from pydantic import SecretStr

from dagster_project.defs.maintenance.assets import compaction
from dagster_project.defs.resources import resources_from_settings
from dagster_project.lib.windows import Window
from iot_core.settings import Settings
from iot_etl.embedded.postgres import PG_PASSWORD_FILE, postgres_dir, postgres_process
from iot_etl.embedded.readiness import wait_ready
from iot_etl.embedded.service import ServiceProcess
from tests.support.database import PG_SERVER, database_url, drop_database
from tests.support.embedded_state import remove_system_state
from tests.support.hours import ClosedHour, run_micro
from tests.support.ports import free_port

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
TAG = uuid.uuid4().hex[:8]
IOT_ETL = str(Path(sys.executable).with_name("iot-etl"))
PASSWORD = f"Pw-{uuid.uuid4().hex}"  # distinctive: searched for in every output


@dataclass(frozen=True)
class Cluster:
    """The URLs of this module's roles and databases on the suite's server."""

    owner: str
    writer: str
    reader: str
    dagster: str
    database: str
    dagster_database: str

    def as_role(self, role: str, database: str | None = None) -> str:
        server = PG_SERVER.split("://", 1)[1].split("@", 1)[-1]
        return f"postgresql://{role}:{PASSWORD}@{server}/{database or self.database}"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "IOT_DATABASE_OWNER_URL": self.owner,
            "IOT_DATABASE_URL": self.writer,
            "IOT_DATABASE_READER_URL": self.reader,
            "IOT_DAGSTER_PG_URL": self.dagster,
            **extra,
        }


def superuser(statement: str) -> None:
    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(statement)


def iot_etl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IOT_ETL, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """An owner role (CREATEDB, CREATEROLE: no superuser) and Dagster's role made here; the product
    database, the writer and the reader made by `iot-etl db migrate`; everything dropped afterwards."""
    names = {kind: f"iot_{kind}_{TAG}" for kind in ("owner", "writer", "reader", "dagster")}
    database, dagster_database = f"iot_roles_{TAG}", f"iot_roles_dagster_{TAG}"
    superuser(f"CREATE ROLE {names['owner']} LOGIN CREATEDB CREATEROLE")
    superuser(f"CREATE ROLE {names['dagster']} LOGIN CREATEDB")
    probe = Cluster("", "", "", "", database, dagster_database)
    found = Cluster(
        owner=probe.as_role(names["owner"]),
        writer=probe.as_role(names["writer"]),
        reader=probe.as_role(names["reader"]),
        dagster=probe.as_role(names["dagster"], dagster_database),
        database=database,
        dagster_database=dagster_database,
    )
    try:
        yield found
    finally:
        for name in (database, dagster_database):
            drop_database(name)
        for role in names.values():
            superuser(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture(scope="module")
def migrated(cluster: Cluster) -> Cluster:
    result = iot_etl(cluster.env(), "db", "migrate")
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert f"writer: role iot_writer_{TAG} created" in lines
    assert f"reader: role iot_reader_{TAG} created" in lines
    assert any(
        line.startswith(f"dagster: database {cluster.dagster_database} accepts only") for line in lines
    )
    return cluster


def refused(url: str, statement: str) -> str:
    """The error `statement` meets as the role of `url` (the test fails when it succeeds)."""
    with psycopg.connect(url, autocommit=True) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute(statement)
    return str(caught.value)


def test_writer_and_reader_have_least_privilege(migrated: Cluster) -> None:
    writer, reader = migrated.writer, migrated.reader
    assert "must be owner" in refused(writer, "DROP TABLE measurements")
    assert "permission denied" in refused(writer, "TRUNCATE measurements")
    assert "permission denied" in refused(writer, "CREATE TABLE x (a int)")
    assert "pg_execute_server_program" in refused(writer, "COPY (SELECT 1) TO PROGRAM 'true'")
    assert "must be owner" in refused(writer, "ALTER TABLE measurements ADD COLUMN x int")
    assert "permission denied" in refused(writer, "DELETE FROM schema_migrations")
    assert "read-only" in refused(reader, "INSERT INTO devices (device_key, kind) VALUES ('r', 'plain')")
    with psycopg.connect(reader, autocommit=True) as conn:  # read-only by default, and no privilege either
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM metrics")
    with psycopg.connect(writer, autocommit=True) as conn:  # rows, sequences and temp tables: yes
        conn.execute("CREATE TEMP TABLE stage (a int)")
        conn.execute("INSERT INTO devices (device_key, kind) VALUES ('w-1', 'plain')")
        conn.execute("DELETE FROM devices WHERE device_key = 'w-1'")
    with psycopg.connect(reader) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] > 0
    for role in ("reader", "writer"):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(migrated.as_role(f"iot_{role}_{TAG}", migrated.dagster_database)).close()
    psycopg.connect(migrated.dagster).close()  # Dagster's own role still connects


def test_migrate_again_changes_nothing_and_says_what_it_did(migrated: Cluster) -> None:
    result = iot_etl(migrated.env(), "db", "migrate")
    assert result.returncode == 0, result.stderr
    assert "0 migration(s) applied" in result.stdout
    assert f"writer: role iot_writer_{TAG} exists, password set from its URL" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
    # owner and writer the same URL: one line, no role made
    same = iot_etl(migrated.env(IOT_DATABASE_URL=migrated.owner, IOT_DATABASE_READER_URL=""), "db", "migrate")
    assert same.returncode == 0, same.stderr
    [line] = [line for line in same.stdout.splitlines() if line.startswith("writer:")]
    assert "no roles created" in line


def test_pipeline_runs_as_the_writer(migrated: Cluster) -> None:
    """A micro-batch, a backfill of the hour and compaction, with the writer's and the owner's URLs."""
    settings = Settings(
        database_url=SecretStr(migrated.writer),
        database_owner_url=SecretStr(migrated.owner),
        stream_prefix=f"test:roles:{TAG}:raw",
        window_seconds=10,
        window_grace_ms=500,
        retention_raw_days=1,  # retention deletes (nothing this young) as the owner
    )
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        hour = ClosedHour(settings)
        for n in range(5):
            hour.add(1 + n, "devices/a1b2c3d4/temperature", f"{20 + n}")
        with DagsterInstance.ephemeral() as instance:
            micro = run_micro(settings, instance, Window(hour.start_ms, hour.start_ms + 10_000))
            assert micro.success
            assert hour.run(instance, resources=resources_from_settings(settings)).success
            result = materialize([compaction], instance=instance, resources=resources_from_settings(settings))
            assert result.success
        with psycopg.connect(migrated.reader) as conn:
            assert conn.execute("SELECT count(*) FROM measurements").fetchone()[0] == 5
            assert conn.execute("SELECT count(*) FROM compactions").fetchone()[0] == 1
    finally:
        keys = list(client.scan_iter(f"{settings.stream_prefix}*"))
        if keys:
            client.delete(*keys)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:S3CRET@127.0.0.1:1/x",
        "postgresql://u:S3CRET@127.0.0.1:1/",
        "postgresql://u:S3CRET@[127.0.0.1:1/x",
        "postgresql://u:S3CRET@127.0.0.1:1/x?sslmode=bogus",
    ],
)
def test_no_database_error_shows_the_password(url: str) -> None:
    env = {**os.environ, "IOT_DATABASE_URL": url}
    env.pop("IOT_DATABASE_OWNER_URL", None)
    result = iot_etl(env, "db", "migrate")
    assert result.returncode != 0
    assert "S3CRET" not in result.stdout + result.stderr
    assert "u:***@" in result.stderr or "127.0.0.1" in result.stderr, result.stderr


@pytest.fixture
def services_base() -> Iterator[Path]:
    """A folder for an embedded server's data: not under pytest's tmp_path, whose root is private to root
    (the embedded PostgreSQL runs as nobody when the tests run as root)."""
    base = Path(tempfile.mkdtemp(prefix="iot-embedded-pg-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def running(service: ServiceProcess) -> Iterator[str]:
    """The embedded server running; yields the URL with its password that `up` goes on with."""
    assert service.settings is not None
    url = service.settings.database_url.get_secret_value()
    with open(service.log, "ab") as log:
        process = subprocess.Popen(service.argv, user=service.user, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(lambda: _connects(url), "embedded PostgreSQL", lambda: process.poll() is None)
        yield url
    finally:
        process.send_signal(service.stop_signal)
        process.wait(timeout=60)


def _connects(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


def test_embedded_postgresql_takes_no_connection_without_its_password(
    services_base: Path, request: pytest.FixtureRequest
) -> None:
    plain = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    settings = Settings(database_url=SecretStr(plain), dagster_home=services_base / "home")
    request.addfinalizer(lambda: remove_system_state(settings))
    service = postgres_process(settings)
    workdir = postgres_dir(settings)
    hba = (workdir / "data" / "pg_hba.conf").read_text()
    assert "trust" not in hba and "scram-sha-256" in hba
    password_file = workdir / PG_PASSWORD_FILE
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    assert password not in " ".join(service.argv)
    assert not (workdir / "initdb.pwfile").exists()
    with running(service) as url:
        assert password in url
        with psycopg.connect(url) as conn:
            (verifier,) = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'"
            ).fetchone()
        assert verifier.startswith("SCRAM-SHA-256$")
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(plain, connect_timeout=5).close()
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(plain.replace("postgres@", "postgres:wrong@"), connect_timeout=5).close()

    # a cluster an earlier version made with trust: the superuser gets the password, trust goes
    (workdir / "data" / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    again = postgres_process(settings)
    assert "trust" not in (workdir / "data" / "pg_hba.conf").read_text()
    with running(again) as url:
        psycopg.connect(url).close()
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(plain, connect_timeout=5).close()
