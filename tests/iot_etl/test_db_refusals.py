"""A PostgreSQL that answers and refuses (a wrong password, a role or database that does not exist) is
reported with what it said and what to do, in one line, not as "unreachable ... start PostgreSQL"."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from iot_core.db_errors import postgres_refusal
from iot_etl.db_roles import database_errors
from iot_etl.errors import explain
from iot_etl.startup import CannotStart, require_postgres
from tests.support.postgres_server import PrivatePostgres

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]
IOT_ETL = str(Path(sys.executable).with_name("iot-etl"))
#: the driver's texts as psycopg 3.3 gives them for PostgreSQL 15's answers (and libpq's own)
SAID = {
    "authentication": 'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
    'password authentication failed for user "app"',
    "role": 'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
    'role "nobody_here" does not exist',
    "database": 'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
    'database "iot" does not exist',
    "password": 'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
    "fe_sendauth: no password supplied",
    "pg_hba": 'connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  '
    'no pg_hba.conf entry for host "10.0.0.9", user "app", database "iot", no encryption',
    "privilege": 'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
    'permission denied for database "iot"\nDETAIL:  User does not have CONNECT privilege.',
}


@pytest.mark.parametrize("kind", sorted(SAID))
def test_each_refusal_is_named_with_what_to_do(kind: str) -> None:
    refusal = postgres_refusal(SAID[kind], "IOT_DATABASE_URL")
    assert refusal is not None and refusal.kind == kind
    assert "\n" not in str(refusal) and "connection to server" not in refusal.said
    assert "IOT_DATABASE_URL" in refusal.todo and "start PostgreSQL" not in str(refusal)


def test_a_server_that_does_not_answer_is_no_refusal() -> None:
    text = (
        'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?"
    )
    assert postgres_refusal(text, "IOT_DATABASE_URL") is None
    assert postgres_refusal("timeout expired", "IOT_DATABASE_URL") is None


def missing_role_url() -> str:
    return f"postgresql://nobody_{uuid.uuid4().hex[:8]}@127.0.0.1:5432/postgres"


def test_a_missing_role_is_what_postgresql_said_everywhere() -> None:
    url = missing_role_url()
    role = url.split("//")[1].split("@")[0]
    with pytest.raises(psycopg.OperationalError) as raised:
        psycopg.connect(url, connect_timeout=10)
    line = explain(raised.value)
    assert line.startswith(f'PostgreSQL refused the connection: role "{role}" does not exist; ')
    assert "unreachable" not in line and "start PostgreSQL" not in line
    with pytest.raises(CannotStart, match=f'refused the connection: role "{role}" does not exist'):
        require_postgres(url, "IOT_DATABASE_URL")  # `up` before it starts anything
    with (
        pytest.raises(Exception, match=f'refused the connection: role "{role}"') as wrapped,
        database_errors(url, "IOT_DATABASE_OWNER_URL"),
        psycopg.connect(url, connect_timeout=10),
    ):
        pass
    assert "IOT_DATABASE_OWNER_URL" in str(wrapped.value)


def test_a_missing_database_still_lets_up_start_it_is_made_by_migrate() -> None:
    require_postgres(
        f"postgresql://postgres@127.0.0.1:5432/iot_none_{uuid.uuid4().hex[:8]}", "IOT_DATABASE_URL"
    )


def test_status_and_migrate_with_a_missing_role_say_so_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
    env.update(IOT_DATABASE_URL=missing_role_url(), IOT_STREAM_PREFIX=f"test:{uuid.uuid4().hex[:8]}:raw")
    for command in (["status"], ["db", "migrate"]):
        done = subprocess.run(
            [IOT_ETL, *command], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
        )
        errors = [line for line in done.stderr.splitlines() if line.startswith("iot-etl: error: ")]
        assert done.returncode == 1 and len(errors) == 1, done.stderr
        assert "refused" in errors[0] and "does not exist" in errors[0], errors[0]
        assert "unreachable" not in errors[0] and "start PostgreSQL" not in errors[0]


def test_a_wrong_password_is_an_authentication_failure_without_the_password() -> None:
    with PrivatePostgres() as pg:
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("CREATE ROLE app LOGIN PASSWORD 'pw-right-5e1f'")
            (hba,) = conn.execute("SHOW hba_file").fetchone() or ("",)
            Path(hba).write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
            conn.execute("SELECT pg_reload_conf()")
        wrong = f"postgresql://app:pw-wrong-9a8b@{pg.host}:{pg.port}/postgres"
        with pytest.raises(psycopg.OperationalError) as raised:
            psycopg.connect(wrong, connect_timeout=10)
        line = explain(raised.value)
        assert 'password authentication failed for user "app"' in line
        assert "check the user and password in IOT_DATABASE_URL" in line
        assert "pw-wrong-9a8b" not in line and "unreachable" not in line
        with pytest.raises(CannotStart, match="password authentication failed") as refused:
            require_postgres(wrong, "IOT_DATABASE_URL")
        assert "pw-wrong-9a8b" not in str(refused.value)
