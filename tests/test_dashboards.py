"""The Grafana dashboards against the real thing: every panel's SQL on a database the pipeline filled,
every Prometheus metric a panel names in a real listener's /metrics, and the provisioning wiring."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import redis
import yaml
from dagster import DagsterInstance

from ingest_listener import Listener
from iot_core.settings import Settings
from simulator.messages import MessageFactory
from tests.support import free_port, wait_for_port, wait_until
from tests.support.grafana import PROVISIONING, ROOT, dashboards, expand_sql, panels, targets
from tests.support.pipeline import SensorDriver

PG_TYPE = "grafana-postgresql-datasource"
PROM_TYPE = "prometheus"


def provisioned_datasources() -> dict[str, dict]:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "datasources.yaml").read_text())
    return {ds["uid"]: ds for ds in doc["datasources"]}


# --- files ---------------------------------------------------------------------------------------
def test_both_dashboards_exist_and_use_only_the_provisioned_datasources() -> None:
    boards = dashboards()
    assert {b["title"] for b in boards.values()} == {"Pipeline health", "Telemetry"}
    assert len({b["uid"] for b in boards.values()}) == len(boards)
    sources = {(ds["type"], uid) for uid, ds in provisioned_datasources().items()}
    for name, board in boards.items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in panels(board):
            assert panel["targets"], f"{name}: {panel['title']} has no query"
            for target in panel["targets"]:
                ds = target.get("datasource") or panel["datasource"]
                assert (ds["type"], ds["uid"]) in sources, f"{name}: {panel['title']}: {ds}"
        for var in board["templating"]["list"]:
            assert (var["datasource"]["type"], var["datasource"]["uid"]) in sources


def test_pipeline_health_covers_what_an_operator_asks() -> None:
    board = next(b for b in dashboards().values() if b["title"] == "Pipeline health")
    titles = {p["title"] for p in panels(board)}
    assert {
        "Messages in per second",
        "Listener buffer",
        "Reconnects and errors",
        "Windows processed per 5 min",
        "Run duration",
        "Lag: arrival to batch finished",
        "Rejects by reason",
        "Raw messages without an outcome",
    } <= titles
    sql = " ".join(t["rawSql"] for _title, t in targets(board, PG_TYPE))
    assert "hourly_rollups" not in sql


def test_datasource_credentials_come_from_the_environment() -> None:
    for ds in provisioned_datasources().values():
        for secret in (ds.get("secureJsonData") or {}).values():
            assert re.fullmatch(r"\$\{[A-Z_]+\}", secret), "secrets are environment references"
        if "user" in ds:
            assert re.fullmatch(r"\$\{[A-Z_]+\}", ds["user"])
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


# --- SQL on a filled database ----------------------------------------------------------------------
def fill_through_the_pipeline(settings: Settings, messages: int) -> None:
    """Simulated messages of all three formats (some bad), as the listener writes them, then the real
    sensor and micro-batch job until every entry is processed."""
    factory = MessageFactory(11, devices=3, bad_share=0.2)
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    last = 0
    for _ in range(messages):
        message = factory.next(datetime.now(UTC))
        entry = client.xadd(
            settings.stream_prefix,
            {
                "topic": message.topic,
                "payload": message.payload,
                "qos": "1",
                "retain": "0",
                "rx_us": str(time.time_ns() // 1000),
            },
        )
        last = int(entry.split(b"-")[0])
    with DagsterInstance.ephemeral() as instance:
        assert SensorDriver(settings, instance).drain(last, timeout_s=120)


def template_values(conn: psycopg.Connection, board: dict) -> dict[str, list[str]]:
    """Each query variable's values as Grafana's "All" sends them."""
    out: dict[str, list[str]] = {}
    for var in board["templating"]["list"]:
        assert var["type"] == "query"
        out[var["name"]] = [str(v) for (v,) in conn.execute(var["query"]).fetchall()]
        assert out[var["name"]], f"variable {var['name']} has no values"
    return out


@pytest.mark.services
def test_every_panel_query_returns_rows_from_a_filled_database(clean_db: str, settings: Settings) -> None:
    fill_through_the_pipeline(settings, 300)
    now = datetime.now(UTC)
    span = {"time_from": now - timedelta(hours=2), "time_to": now + timedelta(minutes=10)}
    results: dict[str, list[tuple]] = {}
    failures: list[str] = []
    with psycopg.connect(clean_db, autocommit=True) as conn:
        for board in dashboards().values():
            variables = template_values(conn, board)
            for title, target in targets(board, PG_TYPE):
                sql = expand_sql(target["rawSql"], variables=variables, **span)
                cursor = conn.execute(sql)
                rows = cursor.fetchall()
                columns = [c.name for c in cursor.description or []]
                key = f"{board['title']} / {title}"
                results[key] = rows
                if not rows:
                    failures.append(f"{key}: no rows")
                elif target["format"] == "time_series" and "time" not in columns:
                    failures.append(f"{key}: no time column in {columns}")
                elif all(v is None for row in rows for c, v in zip(columns, row, strict=True) if c != "time"):
                    failures.append(f"{key}: only NULL values")
    assert not failures, failures
    assert len(results) == sum(len(list(targets(b, PG_TYPE))) for b in dashboards().values()) >= 14

    # a few numbers the pipeline's own tables confirm
    with psycopg.connect(clean_db) as conn:
        batches = conn.execute("SELECT count(*) FROM batches WHERE finished_at IS NOT NULL").fetchone()[0]
        rejected = conn.execute("SELECT count(*) FROM rejected").fetchone()[0]
    assert sum(row[1] for row in results["Pipeline health / Windows processed per 5 min"]) == batches
    assert results["Pipeline health / Raw messages without an outcome"] == [(0,)]
    assert sum(row[2] for row in results["Pipeline health / Rejects by reason"]) == rejected > 0
    # devices persist between tests (only facts are truncated): the fill's are those with facts
    with psycopg.connect(clean_db) as conn:
        (active,) = conn.execute(
            "SELECT count(*) FROM (SELECT device_id FROM measurements UNION SELECT device_id FROM events) d"
        ).fetchone()
    last_seen = results["Telemetry / Last seen per device"]
    assert sum(row[2] is not None for row in last_seen) == active > 0
    assert [row[2] is None for row in last_seen] == sorted(row[2] is None for row in last_seen)


def test_time_groups_expand_as_grafana_does() -> None:
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    t1 = t0 + timedelta(hours=1)
    sql = expand_sql(
        "SELECT $__timeGroupAlias(ts, '5m'), x FROM t WHERE $__timeFilter(ts) AND d IN ($device)"
        " AND ts < $__timeTo() AND g = $__timeGroup(ts, $__interval)",
        time_from=t0,
        time_to=t1,
        interval="30s",
        variables={"device": ["a", "o'b"]},
    )
    assert sql == (
        'SELECT floor(extract(epoch from ts)/300)*300 AS "time", x FROM t WHERE ts BETWEEN '
        "'2026-01-02T03:04:05Z' AND '2026-01-02T04:04:05Z' AND d IN ('a','o''b')"
        " AND ts < '2026-01-02T04:04:05Z' AND g = floor(extract(epoch from ts)/30)*30"
    )
    with pytest.raises(ValueError, match="unexpanded"):
        expand_sql("SELECT $unknown", time_from=t0, time_to=t1)


# --- Prometheus metric names ---------------------------------------------------------------------
def exposed_names(text: str) -> set[str]:
    """Sample names of a /metrics page (`name{labels} value` or `name value`)."""
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"}


def panel_metric_names() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for board in dashboards().values():
        for title, target in targets(board, PROM_TYPE):
            names = set(re.findall(r"\b(iot_[a-z0-9_]+)\b", target["expr"]))
            assert names, f"{title}: {target['expr']} names no listener metric"
            out.setdefault(title, set()).update(names)
    return out


@pytest.mark.services
def test_every_prometheus_metric_of_a_panel_is_in_a_real_listeners_metrics(settings: Settings) -> None:
    port = free_port()
    prefix = f"test:{uuid.uuid4().hex}:raw"
    listener = Listener(
        settings.model_copy(
            update={
                "listener_metrics_port": port,
                "listener_client_id": f"test-dash-{uuid.uuid4().hex[:10]}",
                "listener_topics": [f"test/{uuid.uuid4().hex}/#"],
                "stream_prefix": prefix,
            }
        )
    )
    listener.start()
    try:
        assert listener.wait_ready(15)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            exposed = exposed_names(response.read().decode())
    finally:
        listener.stop()
    assert "iot_listener_messages_received_total" in exposed
    missing = {title: names - exposed for title, names in panel_metric_names().items() if names - exposed}
    assert not missing, f"metrics no listener exposes: {missing}"


# --- a real Prometheus scraping a real listener (where Prometheus is installed) -------------------
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`)")
def test_the_compose_prometheus_config_is_valid() -> None:
    result = subprocess.run(
        [str(PROMTOOL), "check", "config", str(ROOT / "deploy" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def prometheus_query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def samples_scraped(port: int) -> float:
    """How many samples of the listener Prometheus has (0 while it is still starting)."""
    try:
        result = prometheus_query(port, "count_over_time(iot_listener_ready[5m])")
    except (OSError, urllib.error.URLError):
        return 0.0
    return float(result[0]["value"][1]) if result else 0.0


@pytest.mark.services
@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian package `prometheus`)")
def test_every_panel_expression_answers_from_a_prometheus_scraping_a_listener(
    settings: Settings, tmp_path: Path
) -> None:
    metrics_port, prom_port = free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "iot-listener",
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    }
                ],
            }
        )
    )
    listener = Listener(
        settings.model_copy(
            update={
                "listener_metrics_port": metrics_port,
                "listener_client_id": f"test-prom-{uuid.uuid4().hex[:10]}",
                "listener_topics": [f"test/{uuid.uuid4().hex}/#"],
                "stream_prefix": f"test:{uuid.uuid4().hex}:raw",
            }
        )
    )
    listener.start()
    prometheus = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert listener.wait_ready(15)
        wait_for_port("127.0.0.1", prom_port, timeout=60, process=prometheus)
        # rate() and increase() need two samples of every series
        assert wait_until(lambda: samples_scraped(prom_port) >= 3, 90, interval=0.5), (
            "Prometheus did not scrape the listener"
        )
        empty = []
        for board in dashboards().values():
            for title, target in targets(board, PROM_TYPE):
                expr = target["expr"].replace("$__rate_interval", "1m").replace("$__range", "1m")
                if not prometheus_query(prom_port, expr):
                    empty.append(f"{title}: {expr}")
        assert not empty, f"expressions without a result: {empty}"
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(timeout=20)
        except subprocess.TimeoutExpired:
            prometheus.kill()
            prometheus.wait()
        listener.stop()
