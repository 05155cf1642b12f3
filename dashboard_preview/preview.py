"""Both dashboards, queried and drawn: one PNG per dashboard file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg

from dashboard_preview.dashboards import dashboards, interval_seconds
from dashboard_preview.draw import render
from dashboard_preview.queries import PanelData, PrometheusSource, TimeRange, panel_data


@dataclass(frozen=True)
class Rendered:
    title: str
    png: Path
    panels: list[PanelData]


def render_all(
    database_url: str, out_dir: Path, span: TimeRange, *, prometheus: PrometheusSource | None = None
) -> list[Rendered]:
    """Query every panel of every dashboard over `span` and draw each dashboard to `out_dir/<file>.png`."""
    step = interval_seconds(span.auto_interval())
    done: list[Rendered] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name, board in dashboards().items():
            data = panel_data(conn, board, span, prometheus=prometheus)
            png = render(board["title"], data, span, step, out_dir / name.replace(".json", ".png"))
            done.append(Rendered(board["title"], png, data))
    return done
