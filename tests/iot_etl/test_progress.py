"""Progress bars on a terminal: `simulate --count` and `db migrate` (the real console script on a
pseudo-terminal); off a terminal they stay silent, so pipes and logs get no bar."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.database import database_url, drop_database

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]
IOT_ETL = str(Path(sys.executable).with_name("iot-etl"))
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal; (exit status, output without escape codes)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execve(IOT_ETL, [IOT_ETL, *args], env)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), ANSI.sub("", out.decode(errors="replace"))


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
    env.update(settings, COLUMNS="120")
    return env


def test_simulate_with_a_count_shows_a_bar_on_a_terminal_and_none_in_a_pipe() -> None:
    code, out = on_terminal(["simulate", "--count", "40", "--rate", "200", "--kinds", "plain"], clean_env())
    assert code == 0, out
    assert re.search(r"publishing .*40/40", out), out
    piped = subprocess.run(
        [IOT_ETL, "simulate", "--count", "5", "--rate", "200", "--kinds", "plain"],
        env=clean_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.returncode == 0 and "publishing" not in piped.stderr + piped.stdout


def test_db_migrate_shows_a_bar_on_a_terminal() -> None:
    name = f"iot_progress_{uuid.uuid4().hex[:8]}"
    try:
        code, out = on_terminal(["db", "migrate"], clean_env(IOT_DATABASE_URL=database_url(name)))
        assert code == 0, out
        applied = len(list((ROOT / "sql").glob("*.sql")))
        assert re.search(rf"migrating .*{applied}/{applied}", out), out
        assert f"database {name}: created, {applied} migration(s) applied" in out
    finally:
        drop_database(name)
