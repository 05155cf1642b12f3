"""Redis ACL users on a real server: a private `redis-server` (and the embedded Valkey) loads the file
`iot-etl redis-acl` renders; the listener's user may only append to the streams, the pipeline's may read
and trim them, the default user is off, and the listener, a micro-batch, compaction and `status` work
with them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from click.testing import CliRunner, Result
from dagster import DagsterInstance, materialize
from pydantic import SecretStr
from redis.backoff import NoBackoff
from redis.retry import Retry

from dagster_project.defs.maintenance.assets import compaction
from dagster_project.defs.resources import resources_from_settings
from ingest_listener import Listener
from iot_core.redis_acl import RedisAclError, acl_users, render_acl, stream_key_patterns
from iot_core.settings import Settings, get_settings
from iot_etl.cli import main
from iot_etl.embedded.readiness import redis_answers
from iot_etl.embedded.valkey import redis_process
from tests.support import PrivateMosquitto, PrivateRedis, free_port
from tests.support.pipeline import SensorDriver
from tests.support.status import assert_exit, settled
from tests.support.waiting import wait_until

pytestmark = pytest.mark.services

LISTENER, LISTENER_PW = "iot-listener", "l1sten-S3CRET-pw"
PIPELINE, PIPELINE_PW = "iot-pipeline", "p1pe-S3CRET-pw"
NO_RETRY = Retry(NoBackoff(), 0)
ROOT = Path(__file__).resolve().parents[2]
IOT_ETL = str(Path(sys.executable).with_name("iot-etl"))


def acl_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": f"redis://{PIPELINE}:{PIPELINE_PW}@127.0.0.1:6379/0",
        "listener_redis_url": f"redis://{LISTENER}:{LISTENER_PW}@127.0.0.1:6379/0",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrivateRedis, PrivateMosquitto]]:
    """A private redis-server loading the rendered ACL file, and a private broker for the listener."""
    aclfile = tmp_path_factory.mktemp("acl") / "users.acl"
    aclfile.write_text(render_acl(acl_settings()))
    aclfile.chmod(0o600)
    with PrivateRedis(aclfile=aclfile) as server, PrivateMosquitto() as broker:
        yield server, broker


@pytest.fixture
def pipeline_settings(stack: tuple[PrivateRedis, PrivateMosquitto]) -> Settings:
    """The test session's settings with the private Redis as the two users and the private broker."""
    server, broker = stack
    return acl_settings(
        redis_url=server.url_for(PIPELINE, PIPELINE_PW),
        listener_redis_url=server.url_for(LISTENER, LISTENER_PW),
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        listener_client_id=f"test-acl-listener-{os.getpid()}",
        listener_metrics_port=0,
    )


def as_user(server: PrivateRedis, user: str, password: str) -> redis.Redis:
    """A client of one user; a refused login raises at once (redis-py retries AuthenticationError, a
    ConnectionError, with backoff by default)."""
    return server.client(username=user, password=password, retry=NO_RETRY)


def run_cli(*args: str, **env: str) -> Result:
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(main, list(args), env=env)
    finally:
        get_settings.cache_clear()


# --- the file ------------------------------------------------------------------------------------
def test_users_get_the_commands_the_product_sends_and_passwords_only_as_hashes() -> None:
    text = render_acl(acl_settings())
    lines = text.splitlines()
    assert lines[0] == "user default off resetpass resetkeys resetchannels -@all"
    listener = next(line for line in lines if line.startswith(f"user {LISTENER} "))
    pipeline = next(line for line in lines if line.startswith(f"user {PIPELINE} "))
    prefix = get_settings().stream_prefix
    for line in (listener, pipeline):
        assert f" ~{prefix} -@all " in line and " resetkeys resetchannels " in line
    assert listener.endswith("-@all +auth +hello +client|setname +ping +xadd")
    assert pipeline.endswith(
        "-@all +auth +hello +client|setname +ping +xrange +xlen +xtrim +memory|usage +time +info"
    )
    assert LISTENER_PW not in text and PIPELINE_PW not in text and "#" in listener


def test_one_user_for_both_gets_the_union_and_a_note() -> None:
    acl = acl_users(acl_settings(listener_redis_url=None, redis_url="redis://both:pw@127.0.0.1:6379/2"))
    [user] = acl.users
    assert set(user.commands) >= {"xadd", "xrange", "xtrim", "select"}  # db 2: redis-py SELECTs it
    assert "both log in as the Redis user both" in acl.notes[0]
    with pytest.raises(RedisAclError, match="with different passwords"):
        acl_users(
            acl_settings(
                listener_redis_url="redis://both:other@127.0.0.1:6379/0",
                redis_url="redis://both:pw@127.0.0.1:6379/0",
            )
        )


def test_shards_and_glob_characters_in_the_prefix_match_only_the_streams() -> None:
    assert stream_key_patterns("iot:raw", 3) == ("iot:raw:0", "iot:raw:1", "iot:raw:2")
    assert stream_key_patterns("a*b?[c]", 1) == ("a\\*b\\?\\[c\\]",)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"IOT_REDIS_URL": "redis://:pw@127.0.0.1:6379/0"}, "IOT_REDIS_URL has no user name"),
        (
            {"IOT_LISTENER_REDIS_URL": "redis://lis@127.0.0.1:6379/0"},
            "IOT_LISTENER_REDIS_URL has no password",
        ),
        (
            {"IOT_LISTENER_REDIS_URL": "redis://a%20on%20~*%20+@all:pw@h/0"},
            "user name of IOT_LISTENER_REDIS_URL",
        ),
        (
            {"IOT_REDIS_URL": "redis://pipe:p%09w@127.0.0.1:6379/0"},
            "password of IOT_REDIS_URL holds whitespace",
        ),
        ({"IOT_REDIS_URL": "redis://default:pw@127.0.0.1:6379/0"}, "the user `default`"),
    ],
)
def test_bad_urls_are_one_line_exit_2_and_nothing_written(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    base = {"IOT_REDIS_URL": f"redis://p:{PIPELINE_PW}@127.0.0.1:6379/0", "IOT_LISTENER_REDIS_URL": None}
    result = run_cli("redis-acl", "--out", str(tmp_path / "users.acl"), **{**base, **env})
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and len(result.stderr.splitlines()) == 1
    assert PIPELINE_PW not in result.stderr and "pw" not in result.stderr.replace("password", "")
    assert list(tmp_path.iterdir()) == []


def test_redis_acl_command_prints_or_writes_a_0600_file(tmp_path: Path) -> None:
    env = {
        "IOT_REDIS_URL": f"redis://{PIPELINE}:{PIPELINE_PW}@127.0.0.1:6379/0",
        "IOT_LISTENER_REDIS_URL": f"redis://{LISTENER}:{LISTENER_PW}@127.0.0.1:6379/0",
    }
    printed = run_cli("redis-acl", **env)
    assert printed.exit_code == 0 and printed.stdout == render_acl(acl_settings())
    out = tmp_path / "users.acl"
    written = run_cli("redis-acl", "--out", str(out), **env)
    assert written.exit_code == 0, written.output
    assert out.read_text() == printed.stdout and out.stat().st_mode & 0o777 == 0o600
    assert PIPELINE_PW not in written.output + printed.output


# --- the server ----------------------------------------------------------------------------------
def test_anonymous_and_default_user_are_refused(stack: tuple[PrivateRedis, PrivateMosquitto]) -> None:
    server, _ = stack
    with socket.create_connection((server.host, server.port), timeout=10) as anonymous:
        anonymous.sendall(b"PING\r\n")
        assert anonymous.recv(100).startswith(b"-NOAUTH ")
    # redis-py speaks RESP3: its HELLO without AUTH is refused
    with server.client(retry=NO_RETRY) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with as_user(server, "default", "") as default, pytest.raises(redis.AuthenticationError):
        default.ping()
    with as_user(server, LISTENER, "wrong") as wrong, pytest.raises(redis.AuthenticationError):
        wrong.ping()


def test_listener_user_may_only_append_to_the_streams(
    stack: tuple[PrivateRedis, PrivateMosquitto], pipeline_settings: Settings
) -> None:
    server, _ = stack
    stream = pipeline_settings.stream_prefix
    with as_user(server, LISTENER, LISTENER_PW) as client:
        assert client.ping() and client.xadd(stream, {"topic": "t", "payload": "1"})
        refused = [
            lambda: client.xrange(stream),
            lambda: client.xlen(stream),
            lambda: client.delete(stream),
            lambda: client.xtrim(stream, minid="0-1"),
            lambda: client.flushall(),
            lambda: client.config_set("appendonly", "no"),
            lambda: client.xadd(f"{stream}x", {"a": "b"}),
            lambda: client.xadd("elsewhere", {"a": "b"}),
            lambda: client.set(stream, "x"),
            lambda: client.keys("*"),
        ]
        for command in refused:
            with pytest.raises(redis.exceptions.NoPermissionError):
                command()


def test_pipeline_user_cannot_append_or_administer(
    stack: tuple[PrivateRedis, PrivateMosquitto], pipeline_settings: Settings
) -> None:
    server, _ = stack
    stream = pipeline_settings.stream_prefix
    with as_user(server, PIPELINE, PIPELINE_PW) as client:
        assert client.ping() and client.time()
        for command in (
            lambda: client.xadd(stream, {"a": "b"}),
            lambda: client.delete(stream),
            lambda: client.flushall(),
            lambda: client.config_set("appendonly", "no"),
            lambda: client.xrange("elsewhere"),
            lambda: client.execute_command("ACL", "LIST"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                command()


def test_listener_micro_batch_compaction_and_status_run_with_the_two_users(
    stack: tuple[PrivateRedis, PrivateMosquitto], pipeline_settings: Settings, clean_db: str
) -> None:
    server, broker = stack
    settings = pipeline_settings
    stream = settings.stream_prefix
    pipeline = as_user(server, PIPELINE, PIPELINE_PW)
    before = pipeline.xlen(stream)
    listener = Listener(settings)
    listener.start()
    try:
        assert listener.wait_ready(10), "the listener did not connect and subscribe"
        broker.publish_many([("devices/acl-1/temperature", b"21.5"), ("devices/acl-2/humidity", b"40")])
        assert wait_until(lambda: pipeline.xlen(stream) == before + 2, 15)
    finally:
        assert listener.stop() == 0
    [*_, (last_id, fields)] = pipeline.xrange(stream)
    assert fields[b"topic"] == b"devices/acl-2/humidity"

    with DagsterInstance.ephemeral() as instance:
        SensorDriver(settings, instance).drain(int(last_id.split(b"-")[0]))
        with psycopg.connect(clean_db) as conn:
            values = sorted(v for (v,) in conn.execute("SELECT value_num FROM measurements"))
        assert values == [21.5, 40.0]

        env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
        env.update({k: v for k, v in os.environ.items() if k.startswith("IOT_") and k != "IOT_REDIS_URL"})
        env.update(IOT_REDIS_URL=settings.redis_url.get_secret_value(), **broker.env())
        status, failed = settled(
            lambda: subprocess.run(
                [IOT_ETL, "status"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
            ),
            clean_db,
        )
        assert_exit(status.returncode, status.stderr, failed)
        assert f"{before + 2} entries" in status.stdout and "oldest unarchived" in status.stdout
        assert "NOPERM" not in status.stdout + status.stderr
        assert "maxmemory" in status.stdout  # INFO memory ran as the pipeline's user

        trimming = settings.model_copy(update={"stream_trim_margin_s": 0})
        result = materialize([compaction], instance=instance, resources=resources_from_settings(trimming))
        assert result.success
    assert pipeline.xlen(stream) == 0  # XTRIM and MEMORY USAGE ran as the pipeline's user
    pipeline.close()


# --- the embedded Valkey -------------------------------------------------------------------------
def test_embedded_valkey_loads_the_users_from_a_0600_file_never_argv(tmp_path: Path) -> None:
    port = free_port()
    settings = acl_settings(
        redis_url=SecretStr(f"redis://{PIPELINE}:{PIPELINE_PW}@127.0.0.1:{port}/0"),
        listener_redis_url=SecretStr(f"redis://{LISTENER}:{LISTENER_PW}@127.0.0.1:{port}/0"),
        dagster_home=tmp_path / "home",
    )
    workdir = tmp_path / "services" / "redis"
    workdir.mkdir(parents=True)
    (workdir / "appendonlydir").mkdir(mode=0o755)  # what an earlier version left readable
    (workdir / "appendonlydir" / "old.aof").write_text("")
    (workdir / "appendonlydir" / "old.aof").chmod(0o644)
    previous = os.umask(0o077)  # as under `iot-etl up`, which opens the log and spawns the server
    try:
        service = redis_process(settings)
        log = open(service.log, "ab")  # noqa: SIM115
    finally:
        os.umask(previous)
    aclfile = Path(service.argv[service.argv.index("--aclfile") + 1])
    assert aclfile.stat().st_mode & 0o777 == 0o600 and workdir.stat().st_mode & 0o777 == 0o700
    assert (workdir / "appendonlydir").stat().st_mode & 0o777 == 0o700
    assert (workdir / "appendonlydir" / "old.aof").stat().st_mode & 0o777 == 0o600
    with log:
        process = subprocess.Popen(
            service.argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: os.umask(0o077)
        )
    try:
        url = settings.redis_url.get_secret_value()
        assert wait_until(lambda: redis_answers(url), 30), service.log.read_text()
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert PIPELINE_PW.encode() not in cmdline and LISTENER_PW.encode() not in cmdline
        with redis.Redis(port=port, retry=NO_RETRY) as anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        listener = redis.Redis.from_url(settings.listener_redis.get_secret_value())
        assert listener.xadd(settings.stream_prefix, {"a": "b"})
        with pytest.raises(redis.exceptions.NoPermissionError):
            listener.xrange(settings.stream_prefix)
        with pytest.raises(redis.exceptions.NoPermissionError):
            redis.Redis.from_url(url).xadd(settings.stream_prefix, {"a": "b"})
        files = [p for p in workdir.rglob("*") if p.is_file()]
        assert any(p.suffix == ".aof" and p.name != "old.aof" for p in files)
        assert all(p.stat().st_mode & 0o077 == 0 for p in [workdir, *workdir.rglob("*")])
    finally:
        process.terminate()
        process.wait(timeout=30)
