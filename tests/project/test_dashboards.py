"""The Grafana dashboards against the real thing: every panel's SQL on a database the pipeline filled,
every Prometheus metric a panel names in a real listener's /metrics, and the provisioning wiring."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy
import psycopg
import pytest
import yaml
from matplotlib.image import imread

from dashboard_preview.dashboards import PROVISIONING, ROOT, dashboards, expand_sql, panels, targets
from dashboard_preview.preview import render_all
from dashboard_preview.queries import (
    PG_TYPE,
    PROM_TYPE,
    PrometheusSource,
    TimeRange,
    sql_series,
    unfold_repeats,
    variable_values,
)
from iot_core.settings import Settings
from tests.support import free_port
from tests.support.fill import fill_through_the_pipeline
from tests.support.prometheus import PROMETHEUS, private_listener, scraped_listener
from tests.support.waiting import wait_until


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


def test_telemetry_reads_readings_per_device_and_hour_from_the_rollups() -> None:
    board = next(b for b in dashboards().values() if b["title"] == "Telemetry")
    by_title = {title: t["rawSql"] for title, t in targets(board, PG_TYPE)}
    assert "FROM hourly_rollups" in by_title["Readings per device and hour"]
    assert "Last seen per device" in by_title


def test_datasource_credentials_come_from_the_environment() -> None:
    for ds in provisioned_datasources().values():
        for secret in (ds.get("secureJsonData") or {}).values():
            assert re.fullmatch(r"\$\{[A-Z_]+\}", secret), "secrets are environment references"
        if "user" in ds:
            assert re.fullmatch(r"\$\{[A-Z_]+\}", ds["user"])
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


# --- SQL on a filled database ----------------------------------------------------------------------
def template_values(conn: psycopg.Connection, board: dict) -> dict[str, list[str]]:
    """Each query variable's values as Grafana's "All" sends them; none may be empty."""
    out = variable_values(conn, board)
    assert all(out.values()), f"a variable has no values: {out}"
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


# --- the rendered preview (dashboard_preview) --------------------------------------------------------
def assert_drawn(png: Path) -> None:
    """A real PNG with a picture in it, not a blank canvas."""
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(png)
    assert pixels.shape[0] > 500 and pixels.shape[1] > 1000
    assert len(numpy.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)) > 50


@pytest.mark.services
def test_the_preview_draws_every_panel_of_both_dashboards(
    clean_db: str, settings: Settings, tmp_path: Path
) -> None:
    fill_through_the_pipeline(settings, 200)
    rendered = {r.title: r for r in render_all(clean_db, tmp_path, TimeRange.last(2))}
    assert set(rendered) == {"Pipeline health", "Telemetry"}
    with psycopg.connect(clean_db) as conn:
        metric_names = [n for (n,) in conn.execute("SELECT DISTINCT name FROM metrics")]
    for board in dashboards().values():
        done = rendered[board["title"]]
        assert_drawn(done.png)
        assert done.png == tmp_path / f"{board['title'].lower().replace(' ', '-')}.png"
        by_id: dict[int, list] = {}
        for data in done.panels:
            by_id.setdefault(data.panel["id"], []).append(data)
        assert set(by_id) == {p["id"] for p in board["panels"]}
        for panel in panels(board):
            sql = sum(
                1 for t in panel["targets"] if (t.get("datasource") or panel["datasource"])["type"] == PG_TYPE
            )
            for data in by_id[panel["id"]]:
                assert data.queries_run == sql, panel["title"]
                if sql == 0:
                    assert data.note == "Prometheus: not scraped in preview"
                elif panel["type"] == "timeseries" and "repeat" not in panel:
                    assert any(any(v is not None for v in s.values) for s in data.series), panel["title"]
                elif panel["type"] in ("stat", "table"):
                    assert data.tables and data.tables[0].rows, panel["title"]
            if "repeat" in panel:
                assert sorted(d.panel["title"] for d in by_id[panel["id"]]) == sorted(metric_names)


def test_the_preview_reads_time_series_as_grafana_does() -> None:
    t0, t1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    long = sql_series(["time", "metric", "value"], [(t0.timestamp(), "a", 1), (t0, "b", 2), (t1, "a", 3)])
    assert [(s.name, s.times, s.values) for s in long] == [("a", [t0, t1], [1.0, 3.0]), ("b", [t0], [2.0])]
    wide = sql_series(["p50", "time", "max"], [(Decimal("0.5"), t0, None)])
    assert [(s.name, s.values) for s in wide] == [("p50", [0.5]), ("max", [None])]
    assert TimeRange(t0, t0 + timedelta(hours=2)).auto_interval() == "1m"
    assert TimeRange(t0, t0 + timedelta(minutes=3)).auto_interval() == "5s"


def test_a_repeated_panel_unfolds_side_by_side_and_pushes_the_rest_down() -> None:
    board = {
        "panels": [
            {
                "id": 1,
                "title": "$m",
                "repeat": "m",
                "maxPerRow": 2,
                "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8},
            },
            {"id": 2, "title": "below", "gridPos": {"x": 0, "y": 8, "w": 24, "h": 4}},
        ]
    }
    unfolded = unfold_repeats(board, {"m": ["a", "b", "c"]})
    assert [(p["title"], p["gridPos"], v["m"]) for p, v in unfolded] == [
        ("a", {"x": 0, "y": 0, "w": 12, "h": 8}, ["a"]),
        ("b", {"x": 12, "y": 0, "w": 12, "h": 8}, ["b"]),
        ("c", {"x": 0, "y": 8, "w": 12, "h": 8}, ["c"]),
        ("below", {"x": 0, "y": 16, "w": 24, "h": 4}, ["a", "b", "c"]),
    ]


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
    listener = private_listener(settings, port, f"test/{uuid.uuid4().hex}")
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


@pytest.mark.services
@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian package `prometheus`)")
def test_every_panel_expression_answers_from_a_prometheus_scraping_a_listener(
    migrated_db: str, settings: Settings, tmp_path: Path
) -> None:
    with scraped_listener(settings, tmp_path) as scraped:
        empty = []
        for board in dashboards().values():
            for title, target in targets(board, PROM_TYPE):
                expr = target["expr"].replace("$__rate_interval", "1m").replace("$__range", "1m")
                if not scraped.query(expr):
                    empty.append(f"{title}: {expr}")
        assert not empty, f"expressions without a result: {empty}"

        # the preview draws the listener panels from the same Prometheus, once messages went through
        assert scraped.publish_for(settings, 5) > 0
        assert wait_until(
            lambda: scraped.query("sum(iot_listener_entries_written_total) > 0"), 30, interval_s=0.5
        )
        source = PrometheusSource(scraped.prometheus_url, TimeRange.last(2 / 60))
        (health,) = [
            r
            for r in render_all(migrated_db, tmp_path, TimeRange.last(1), prometheus=source)
            if r.title == "Pipeline health"
        ]
    assert_drawn(health.png)
    listener_panels = [d for d in health.panels if d.panel["id"] in (2, 3, 4, 5, 6)]
    assert len(listener_panels) == 5
    for data in listener_panels:
        assert data.note is None and data.span == source.span
        assert data.queries_run == len(data.panel["targets"])
        assert any(any(v is not None for v in s.values) for s in data.series), data.panel["title"]
