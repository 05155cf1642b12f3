"""`iot-etl status`: what each part holds right now, in one table."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

import psycopg
import redis
from prometheus_client.parser import text_string_to_metric_families

from dagster_project.lib.retention import has_timescaledb
from iot_core.db_errors import postgres_refusal
from iot_core.mqtt.client import describe_connect_error, new_client
from iot_core.mqtt.endpoint import MqttEndpoint
from iot_core.mqtt.tls import TlsFileError
from iot_core.pki_crl import crl_next_update
from iot_core.redact import redact_text
from iot_core.redis_client import REDIS_UNAVAILABLE, RedisClient, redis_client
from iot_core.redis_memory import redis_memory_or_none
from iot_core.settings import Settings
from iot_core.streams import stream_names
from iot_etl.pki_upkeep import crl_warning, layout_of
from iot_etl.status_checks import check_lines
from iot_etl.status_retention import compaction_lines, dagster_runs_line, stream_lines
from iot_etl.status_timescale import failed_job_items

DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"
#: What Mosquitto's counter covers: the whole broker, not this pipeline alone.
DROPPED_COVERS = (
    "(the broker's total since it started, for all its clients: messages a subscriber's full queue "
    "could not take; this pipeline's share is not counted apart)"
)
#: The listener's counter of messages acknowledged but not written (`ingest_listener.metrics`).
LIMITED_METRIC = "iot_listener_messages_limited"


@dataclass
class StatusLine:
    part: str
    item: str
    value: str


def database_status(settings: Settings) -> list[StatusLine]:
    try:
        with psycopg.connect(settings.database_url.get_secret_value(), connect_timeout=5) as conn:
            lines = [
                StatusLine("database", "engine", "TimescaleDB" if has_timescaledb(conn) else "PostgreSQL"),
                StatusLine("database", "autovacuum", autovacuum_state(conn)),
            ]
            for table in ("raw_messages", "measurements", "events", "rejected", "batches"):
                (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
                lines.append(StatusLine("database", table, str(count)))
            row = conn.execute(
                "SELECT run_id, partition_key, range_end, raw_count FROM batches "
                "WHERE finished_at IS NOT NULL ORDER BY range_end DESC, batch_id DESC LIMIT 1"
            ).fetchone()
            if row:
                lines.append(
                    StatusLine(
                        "database",
                        "last batch",
                        f"run {row[0][:8]} hour {row[1]} to {row[2]:%H:%M:%S} ({row[3]} raw)",
                    )
                )
            lines.append(StatusLine("database", "hourly_rollups", rollups_summary(conn)))
            return lines + [StatusLine(*line) for line in compaction_lines(conn)]
    except psycopg.Error as exc:
        text = redact_text((str(exc).splitlines() or ["error"])[0])
        refusal = postgres_refusal(text, "IOT_DATABASE_URL")
        if refusal is not None:  # the server answered: what it said (`iot-etl status` adds what to do)
            return [StatusLine("database", "refused", refusal.said)]
        return [StatusLine("database", "error", text)]


def autovacuum_state(conn: psycopg.Connection) -> str:
    """The server's autovacuum as `status` shows it: on, or what being off costs and how to turn it on. The
    fact tables only ever grow between retention's deletes, and without autovacuum they are never analysed
    (the planner's row estimates stay those of an empty table) nor vacuumed (index-only scans read the
    heap, freed space is not reused)."""
    (setting,) = conn.execute("SHOW autovacuum").fetchone() or ("on",)
    if setting == "on":
        return "on"
    return (
        "off: the tables are never analysed nor vacuumed, so queries and retention slow down as they grow; "
        "turn it on (ALTER SYSTEM SET autovacuum = on; SELECT pg_reload_conf();)"
    )


def rollups_summary(conn: psycopg.Connection) -> str:
    """How many device-metric hours `hourly_rollups` holds, its newest hour and that hour's readings."""
    count, newest = conn.execute("SELECT count(*), max(hour) FROM hourly_rollups").fetchone()
    if newest is None:
        return "empty"
    (readings,) = conn.execute("SELECT sum(count) FROM hourly_rollups WHERE hour = %s", (newest,)).fetchone()
    return f"{count} device-metric hours, newest {newest:%Y-%m-%d %H:00} ({readings} readings)"


def redis_status(settings: Settings) -> list[StatusLine]:
    try:
        client = redis_client(settings.redis_url.get_secret_value(), settings.redis_mode, socket_timeout=5)
        streams = stream_names(settings.stream_prefix, settings.stream_shards, cluster=settings.redis_cluster)
        return [redis_memory_line(client)] + [
            StatusLine(*line) for line in stream_lines(client, streams, settings)
        ]
    except (redis.RedisError, *REDIS_UNAVAILABLE) as exc:
        return [StatusLine("redis", "error", str(exc))]


def redis_memory_line(client: RedisClient) -> StatusLine:
    """How close Redis is to its maxmemory (full, with noeviction, the listener stops acknowledging)."""
    memory = redis_memory_or_none(client)
    if memory is None:
        return StatusLine(
            "redis", "memory", "unknown (the Redis user may not run INFO: run iot-etl redis-acl)"
        )
    return StatusLine("redis", "memory", memory.describe())


def broker_dropped(settings: Settings, timeout_s: float = 6.0) -> StatusLine:
    """Mosquitto's count of messages it dropped (queue limits): should stay 0 with our broker config."""
    got = threading.Event()
    value: list[str] = []
    endpoint = MqttEndpoint.for_role(settings, "ops")
    try:
        client = new_client(endpoint, "iot-etl-status")
    except TlsFileError as exc:
        return StatusLine("broker", "error", str(exc))
    refused: list[str] = []

    def on_connect(c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        if rc.is_failure:  # type: ignore[attr-defined]
            refused.append(str(rc))
            got.set()
        else:
            c.subscribe(DROPPED_TOPIC)  # type: ignore[attr-defined]

    client.on_connect = on_connect

    def on_message(_c: object, _u: object, message: object) -> None:
        value.append(message.payload.decode())  # type: ignore[attr-defined]
        got.set()

    client.on_message = on_message
    try:
        client.connect(endpoint.host, endpoint.port, keepalive=10)
    except OSError as exc:
        return StatusLine("broker", "error", f"{endpoint.address}: {describe_connect_error(exc)}")
    client.loop_start()
    try:
        got.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    if refused:
        return StatusLine("broker", "error", f"{endpoint.address} refused status's connection: {refused[0]}")
    if value:
        return StatusLine("broker", "messages dropped", f"{value[0]} {DROPPED_COVERS}")
    why = (
        "the secured broker keeps no retained messages, so $SYS values arrive only when they change"
        if settings.security
        else "$SYS not published"
    )
    return StatusLine("broker", "messages dropped", f"unknown ({why})")


def revocation_list(settings: Settings) -> StatusLine:
    """When the CRL expires: an expired one makes Mosquitto refuse every client, valid ones too."""
    layout = layout_of(settings)
    ends = crl_next_update(layout)
    if ends is None:
        return StatusLine("pki", "revocation list", f"none in {layout.root} (run `iot-etl certs init`)")
    warning = crl_warning(layout)
    return StatusLine("pki", "revocation list", warning or f"valid until {ends:%Y-%m-%d %H:%M} UTC")


def listener_limited(settings: Settings, timeout_s: float = 2.0) -> StatusLine:
    """Messages the listener acknowledged but did not write (per-device limits, topics too long), read from
    its /metrics endpoint: counted since that listener process started. A listener that cannot be reached is
    no error of status (it may simply not run here)."""
    item = "messages limited"
    port = settings.listener_metrics_port
    if not port:
        return StatusLine(
            "listener", item, "unknown (the listener's metrics are off: IOT_LISTENER_METRICS_PORT=0)"
        )
    host = settings.listener_metrics_host
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            text = response.read().decode()
        families = [f for f in text_string_to_metric_families(text) if f.name == LIMITED_METRIC]
    except (OSError, ValueError) as exc:
        why = getattr(exc, "reason", exc)  # a URLError's reason is the socket's error
        return StatusLine("listener", item, f"unknown (no listener metrics at {url}: {why})")
    if not families:
        return StatusLine("listener", item, f"unknown (the listener at {url} does not count them)")
    counts = {s.labels["reason"]: int(s.value) for s in families[0].samples if s.name.endswith("_total")}
    detail = ", ".join(f"{reason} {n}" for reason, n in counts.items() if n)
    return StatusLine(
        "listener", item, f"{sum(counts.values())} since it started" + (f" ({detail})" if detail else "")
    )


def parts(settings: Settings) -> list[tuple[str, Callable[[], list[StatusLine]]]]:
    """What `status` asks, in the order it shows the answers: (what it waits for, how to ask)."""
    asked: list[tuple[str, Callable[[], list[StatusLine]]]] = [
        ("the database (row counts)", lambda: database_status(settings)),
        ("Redis (memory, streams, what is not archived)", lambda: redis_status(settings)),
        ("Dagster's run storage", lambda: [StatusLine(*dagster_runs_line(settings))]),
        ("the checks' newest results", lambda: [StatusLine(*line) for line in check_lines(settings)]),
        ("the broker's $SYS counter", lambda: [broker_dropped(settings)]),
        ("the listener's metrics", lambda: [listener_limited(settings)]),
    ]
    if settings.security:
        asked.append(("the revocation list", lambda: [revocation_list(settings)]))
    return asked


def collect(settings: Settings, waiting: Callable[[list[str]], None] = lambda _: None) -> list[StatusLine]:
    """Every part's lines, asked at once (a slow part does not hold up the others); `waiting` hears which
    parts are still being waited for whenever that changes, and [] at the end."""
    asked = parts(settings)
    with ThreadPoolExecutor(max_workers=len(asked), thread_name_prefix="status") as pool:
        futures = {pool.submit(ask): what for what, ask in asked}
        pending = set(futures)
        waiting([what for what, _ in asked])
        while pending:
            _, pending = wait(pending, return_when=FIRST_COMPLETED)
            waiting([futures[f] for f in futures if f in pending])
    return [line for future in futures for line in future.result()]


def render(lines: list[StatusLine]) -> str:
    width = max(len(f"{line.part} {line.item}") for line in lines)
    return "\n".join(f"{f'{line.part} {line.item}':<{width}}  {line.value}" for line in lines)


def problems(lines: list[StatusLine], settings: Settings) -> tuple[list[str], list[str]]:
    """What is wrong among `lines` and what to do about each, for `status` to exit non-zero with: a
    refused or unreachable part, a TimescaleDB job that failed its last run."""
    down = {line.part: line.value for line in lines if line.item == "error"}
    refused = [
        refusal
        for line in lines
        if line.item == "refused"
        if (refusal := postgres_refusal(line.value, "IOT_DATABASE_URL"))
    ]
    what: list[str] = [f"PostgreSQL refused status's connection: {r.said}" for r in refused]
    todo: list[str] = [r.todo for r in refused]
    failed = failed_job_items([(line.part, line.item, line.value) for line in lines])
    if failed:
        what.append(f"{len(failed)} TimescaleDB job(s) failed their last run ({', '.join(failed)})")
        todo.append("see their lines above and docs/troubleshooting.md")
    if down:
        broker = "IOT_MQTT_SERVICE_HOST/PORT and IOT_PKI_DIR" if settings.security else "IOT_MQTT_HOST/PORT"
        hints = {"database": "IOT_DATABASE_URL", "redis": "IOT_REDIS_URL", "broker": broker}
        what.append(f"{', '.join(down)} unreachable ({'; '.join(f'{p}: {v}' for p, v in down.items())})")
        todo.append(
            f"start {'them' if len(down) > 1 else 'it'} or check {', '.join(hints.get(p, p) for p in down)}"
        )
    return what, todo
