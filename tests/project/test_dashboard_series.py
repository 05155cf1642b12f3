"""What the dashboards draw from real data, through the preview (`dashboard_preview`): one series per metric
and canonical unit, and message counts at the minutes the messages arrived, not at the batch that took
them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from dagster import DagsterInstance

from dashboard_preview.dashboards import dashboards
from dashboard_preview.draw import render
from dashboard_preview.queries import PanelData, TimeRange, panel_data
from iot_core.settings import Settings
from tests.support.hours import ClosedHour

pytestmark = pytest.mark.services


def board(title: str) -> dict:
    return next(b for b in dashboards().values() if b["title"] == title)


def hour_span(hour: ClosedHour) -> TimeRange:
    start = datetime.fromtimestamp(hour.start_ms / 1000, UTC)
    return TimeRange(start, start + timedelta(hours=1))


def test_c_and_degree_c_draw_as_one_series(clean_db: str, settings: Settings) -> None:
    hour = ClosedHour(settings)
    topic = "devices/one-series/air_temp"
    hour.add(600, topic, json.dumps({"value": 21.5, "unit": "C"}))
    hour.add(1200, topic, "22.5 °C")
    hour.add(1800, topic, json.dumps({"value": 23.5, "unit": "celsius"}))
    with DagsterInstance.ephemeral() as instance:
        assert hour.run(instance).success
    with psycopg.connect(clean_db) as conn:  # and one reading as a release before sql/020 stored it
        (legacy,) = conn.execute(
            "INSERT INTO metrics (name, unit) VALUES ('air_temp', 'C') RETURNING metric_id"
        ).fetchone()
        conn.execute("UPDATE measurements SET metric_id = %s WHERE raw_id = 1", (legacy,))
    panels = panel_data_by_title(clean_db, "Telemetry", hour_span(hour))
    (chart,) = panels["air_temp"]
    mine = [s for s in chart.series if s.name.startswith("one-series")]
    assert [s.name for s in mine] == ["one-series (°C)"]
    assert sorted(v for v in mine[0].values if v is not None) == [21.5, 22.5, 23.5]
    (latest,) = panels["Latest value per device and metric"]
    rows = [r for r in latest.tables[0].rows if r[0] == "one-series"]
    assert [(r[1], r[3], r[4]) for r in rows] == [("air_temp", "23.5", "°C")]


def panel_data_by_title(url: str, title: str, span: TimeRange) -> dict[str, list[PanelData]]:
    with psycopg.connect(url, autocommit=True) as conn:
        data = panel_data(conn, board(title), span)
    out: dict[str, list[PanelData]] = {}
    for d in data:
        out.setdefault(d.panel["title"], []).append(d)
    return out


def test_a_backfilled_hour_is_drawn_at_the_minutes_its_messages_arrived(
    clean_db: str, settings: Settings, tmp_path: Path
) -> None:
    hour = ClosedHour(settings)
    for n in range(240):  # one message every 15 s over the whole hour, every tenth one bad
        payload = "not a number at all \x00" if n % 10 == 9 else f"{20 + n % 5} °C"
        hour.add(n * 15, f"devices/spread-{n % 3}/temperature", payload)
    with DagsterInstance.ephemeral() as instance:
        assert hour.run(instance).success  # a backfill of the hour: one batch took all of it
    with psycopg.connect(clean_db) as conn:
        assert conn.execute("SELECT count(*), sum(raw_count) FROM batches").fetchone() == (1, 240)
    span = hour_span(hour)
    panels = panel_data_by_title(clean_db, "Pipeline health", span)
    (outcomes,) = panels["Messages per minute by arrival and outcome"]
    series = {s.name: s for s in outcomes.series}
    assert set(series) == {"raw", "measurements", "rejected"}
    raw = series["raw"]
    minute = timedelta(minutes=1)
    assert raw.times == [span.start + i * minute for i in range(60)]
    assert raw.values == [4.0] * 60  # per minute: 240 messages over 60 minutes, no spike
    assert sum(v or 0 for v in series["measurements"].values) == 216
    assert sum(v or 0 for v in series["rejected"].values) == 24
    assert len(series["rejected"].times) == 24  # the bad ones where they arrived, not at one point

    png = render("Pipeline health", list(panels_in_order(panels)), span, 60, tmp_path / "health.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def panels_in_order(panels: dict[str, list[PanelData]]) -> list[PanelData]:
    return [d for group in panels.values() for d in group]
