"""What each panel of a dashboard shows: its queries run against a real database (and a real Prometheus,
where one is given), as Grafana would send them for one time range."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from dashboard_preview.dashboards import expand_sql, interval_seconds

PG_TYPE = "grafana-postgresql-datasource"
PROM_TYPE = "prometheus"
#: Steps Grafana rounds its automatic `$__interval` to (a subset, enough for ranges of minutes to days).
_STEPS = (1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 10800, 21600, 86400)


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime

    @classmethod
    def last(cls, hours: float, now: datetime | None = None) -> TimeRange:
        end = now or datetime.now(UTC)
        return cls(end - timedelta(hours=hours), end)

    def auto_interval(self, points: int = 120) -> str:
        """Grafana's `$__interval`: the range over about `points` data points, rounded to a round step."""
        wanted = (self.end - self.start).total_seconds() / points
        step = next((s for s in _STEPS if s >= wanted), _STEPS[-1])
        return f"{step // 60}m" if step >= 60 and step % 60 == 0 else f"{step}s"


@dataclass(frozen=True)
class Series:
    """One line or bar series of a time-series panel."""

    name: str
    times: list[datetime]
    values: list[float | None]


@dataclass(frozen=True)
class Table:
    """A result in table form (stat and table panels)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


@dataclass
class PanelData:
    """A panel (repeats already unfolded) and what its queries returned."""

    panel: dict[str, Any]
    series: list[Series] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    queries_run: int = 0
    #: Why the panel shows no data of its own (e.g. no Prometheus to ask), or None.
    note: str | None = None
    #: The range its queries covered where that is not the dashboard's (a short live scrape).
    span: TimeRange | None = None


@dataclass(frozen=True)
class PrometheusSource:
    """A Prometheus to ask for the listener panels, and the range it has samples for."""

    url: str
    span: TimeRange


def variable_values(conn: psycopg.Connection, board: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each query variable's values as Grafana's "All" sends them."""
    out: dict[str, list[str]] = {}
    for var in board.get("templating", {}).get("list", []):
        if var["type"] != "query":
            raise ValueError(f"variable {var['name']}: type {var['type']} is not one the preview knows")
        out[var["name"]] = [str(v) for (v,) in conn.execute(var["query"]).fetchall()]
    return out


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, Decimal | int | float):
        return float(value)
    return None


def _instant(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), UTC)


def sql_series(columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> list[Series]:
    """Grafana's reading of a `time_series` result: a `metric` column names the series (long form),
    otherwise every other numeric column is one (wide form)."""
    t = columns.index("time")
    if "metric" in columns:
        m = columns.index("metric")
        v = next(i for i, c in enumerate(columns) if i not in (t, m))
        by_name: dict[str, Series] = {}
        for row in rows:
            series = by_name.setdefault(str(row[m]), Series(str(row[m]), [], []))
            series.times.append(_instant(row[t]))
            series.values.append(_number(row[v]))
        return list(by_name.values())
    return [
        Series(name, [_instant(row[t]) for row in rows], [_number(row[i]) for row in rows])
        for i, name in enumerate(columns)
        if i != t
    ]


def _legend(template: str | None, labels: Mapping[str, str]) -> str:
    if not template:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items() if k != "__name__") + "}"
    out = template
    for key, value in labels.items():
        out = out.replace("{{" + key + "}}", value)
    return out


def prometheus_series(url: str, expr: str, legend: str | None, span: TimeRange, step: float) -> list[Series]:
    """`query_range` of one expression, one Series per result series, named by the legend format."""
    params = {"query": expr, "start": span.start.timestamp(), "end": span.end.timestamp(), "step": step}
    with urllib.request.urlopen(
        f"{url}/api/v1/query_range?{urllib.parse.urlencode(params)}", timeout=30
    ) as r:
        body = json.loads(r.read())
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {expr!r}: {body}")
    return [
        Series(
            _legend(legend, result["metric"]),
            [datetime.fromtimestamp(float(ts), UTC) for ts, _v in result["values"]],
            [float(v) if v not in ("NaN", "+Inf", "-Inf") else None for _ts, v in result["values"]],
        )
        for result in body["data"]["result"]
    ]


def _substitute(text: str, variables: Mapping[str, Sequence[str]]) -> str:
    for name, values in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(f"${{{name}}}", ", ".join(values)).replace(f"${name}", ", ".join(values))
    return text


def unfold_repeats(
    board: Mapping[str, Any], variables: Mapping[str, Sequence[str]]
) -> list[tuple[dict[str, Any], dict[str, list[str]]]]:
    """Every panel with the variables it is queried with; a panel repeated over a variable becomes one
    panel per value, laid out as Grafana does (side by side, `maxPerRow` a row, later panels pushed down)."""
    out: list[tuple[dict[str, Any], dict[str, list[str]]]] = []
    shift = 0
    for panel in _top_down(board):
        pos = dict(panel["gridPos"], y=panel["gridPos"]["y"] + shift)
        name = panel.get("repeat")
        if not name or panel.get("repeatDirection", "h") != "h":
            out.append(({**panel, "gridPos": pos}, dict(variables)))
            continue
        values = list(variables.get(name, [])) or [""]
        per_row = min(len(values), int(panel.get("maxPerRow", 4)))
        width = 24 // per_row
        for i, value in enumerate(values):
            local = {**variables, name: [value]}
            copy_pos = {
                "x": (i % per_row) * width,
                "y": pos["y"] + (i // per_row) * pos["h"],
                "w": width,
                "h": pos["h"],
            }
            out.append(({**panel, "gridPos": copy_pos, "title": _substitute(panel["title"], local)}, local))
        shift += ((len(values) - 1) // per_row) * pos["h"]
    return out


def _top_down(board: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Top-level panels and the panels of rows, in reading order (rows kept: they are drawn as headers)."""
    flat: list[dict[str, Any]] = []
    for panel in board.get("panels", []):
        flat.append(panel)
        if panel.get("type") == "row":
            flat.extend(panel.get("panels", []))
    return sorted(flat, key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))


def at_least(interval: str, minimum: str | None) -> str:
    """`$__interval` of a panel with a minimum interval (its `interval`), as Grafana takes it: never less."""
    if minimum and interval_seconds(minimum) > interval_seconds(interval):
        return minimum
    return interval


def panel_data(
    conn: psycopg.Connection,
    board: Mapping[str, Any],
    span: TimeRange,
    *,
    prometheus: PrometheusSource | None = None,
) -> list[PanelData]:
    """Every panel of a dashboard with the results of its queries over `span` (Prometheus panels over
    the range the Prometheus has, where that is shorter: a preview's scrape lasts minutes, not hours)."""
    interval = span.auto_interval()
    out: list[PanelData] = []
    for panel, variables in unfold_repeats(board, variable_values(conn, board)):
        data = PanelData(panel)
        out.append(data)
        for target in panel.get("targets", []):
            ds = (target.get("datasource") or panel.get("datasource") or {}).get("type")
            if ds == PG_TYPE:
                sql = expand_sql(
                    target["rawSql"],
                    time_from=span.start,
                    time_to=span.end,
                    interval=at_least(interval, panel.get("interval")),
                    variables=variables,
                )
                cursor = conn.execute(sql)
                rows = cursor.fetchall()
                columns = [c.name for c in cursor.description or []]
                if target.get("format") == "time_series":
                    data.series.extend(sql_series(columns, rows))
                else:
                    data.tables.append(Table(columns, rows))
                data.queries_run += 1
            elif ds == PROM_TYPE:
                if prometheus is None:
                    data.note = "Prometheus: not scraped in preview"
                    continue
                own = prometheus.span
                own_step = interval_seconds(own.auto_interval())
                expr = target["expr"].replace("$__rate_interval", f"{max(int(own_step) * 4, 15)}s")
                data.series.extend(
                    prometheus_series(prometheus.url, expr, target.get("legendFormat"), own, own_step)
                )
                data.span = own
                data.queries_run += 1
            else:
                raise ValueError(f"{panel['title']}: datasource type {ds} is not one the preview knows")
    return out
