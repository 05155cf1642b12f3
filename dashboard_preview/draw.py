"""Draw a dashboard's panels in its 24-column grid with matplotlib, in Grafana's dark theme: time series as
lines (or bars where the panel draws bars), stat panels as big numbers, tables as tables, bar gauges as
bars, rows as section headers."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dashboard_preview.queries import PanelData, Series, Table, TimeRange

BACKGROUND = "#111217"
PANEL = "#181b1f"
BORDER = "#2c3235"
TEXT = "#ccccdc"
MUTED = "#8e8e8e"
#: Grafana's default classic palette, in its order.
PALETTE = (
    "#73bf69",
    "#f2cc0c",
    "#8ab8ff",
    "#ff780a",
    "#f2495c",
    "#5794f2",
    "#b877d9",
    "#705da0",
    "#37872d",
    "#fade2a",
)
WIDTH_IN = 20.0
#: One grid unit's height against one column's width (Grafana: 30 px + 8 px margin against ~79 px).
UNIT_RATIO = 0.48
HEADER_IN = 0.6


def format_value(value: Any, unit: str | None = None) -> str:
    """A value as a stat or table cell shows it (Grafana-like units: s, reqps, short)."""
    if value is None:
        return "No data"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if not isinstance(value, int | float) and not hasattr(value, "__float__"):
        return str(value)
    number = float(value)
    if unit == "s":
        for limit, divisor, name in ((60, 1, "s"), (3600, 60, "min"), (86400, 3600, "hour")):
            if abs(number) < limit:
                return f"{number / divisor:.3g} {name}"
        return f"{number / 86400:.3g} day"
    text = _short(number)
    return f"{text} req/s" if unit == "reqps" else text


def _short(number: float) -> str:
    if number == int(number) and abs(number) < 1e4:
        return str(int(number))
    for divisor, suffix in ((1e9, " Bil"), (1e6, " Mil"), (1e3, " K")):
        if abs(number) >= divisor:
            return f"{number / divisor:.3g}{suffix}"
    return f"{number:.3g}"


class Canvas:
    """The figure and the mapping from grid units to figure coordinates."""

    def __init__(self, title: str, span: TimeRange, grid_height: int) -> None:
        self.col = WIDTH_IN / 24
        self.unit = self.col * UNIT_RATIO
        height = HEADER_IN + grid_height * self.unit + 0.2
        self.figure: Figure = plt.figure(figsize=(WIDTH_IN, height), facecolor=BACKGROUND)
        self.height = height
        stamp = f"{span.start:%Y-%m-%d %H:%M} – {span.end:%Y-%m-%d %H:%M} UTC"
        self.figure.text(0.01, 1 - 0.3 / height, title, color=TEXT, fontsize=16, weight="bold", va="center")
        self.figure.text(
            0.99,
            1 - 0.3 / height,
            f"{stamp}   (rendered preview, not Grafana)",
            color=MUTED,
            fontsize=10,
            va="center",
            ha="right",
        )

    def box(self, pos: dict[str, int], pad_in: float = 0.05) -> tuple[float, float, float, float]:
        """A grid position's (left, bottom, width, height) in figure fractions, with a gap around it."""
        left = (pos["x"] * self.col + pad_in) / WIDTH_IN
        width = (pos["w"] * self.col - 2 * pad_in) / WIDTH_IN
        top_in = HEADER_IN + pos["y"] * self.unit + pad_in
        height_in = pos["h"] * self.unit - 2 * pad_in
        return left, 1 - (top_in + height_in) / self.height, width, height_in / self.height

    def inset(
        self,
        outer: tuple[float, float, float, float],
        left_in: float,
        bottom_in: float,
        right_in: float,
        top_in: float,
    ) -> Axes:
        x, y, w, h = outer
        return self.figure.add_axes(
            (
                x + left_in / WIDTH_IN,
                y + bottom_in / self.height,
                w - (left_in + right_in) / WIDTH_IN,
                h - (bottom_in + top_in) / self.height,
            )
        )


def _panel_frame(canvas: Canvas, data: PanelData) -> tuple[float, float, float, float]:
    outer = canvas.box(data.panel["gridPos"])
    ax = canvas.figure.add_axes(outer)
    ax.set_facecolor(PANEL)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color(BORDER)
    title = data.panel["title"]
    if data.span is not None:
        minutes = (data.span.end - data.span.start).total_seconds() / 60
        title += f"   · last {minutes:.0f} min of a live scrape"
    ax.text(
        0.012,
        1 - 0.16 / (outer[3] * canvas.height),
        title,
        transform=ax.transAxes,
        color=TEXT,
        fontsize=10.5,
        weight="bold",
        va="center",
    )
    return outer


def _message(canvas: Canvas, outer: tuple[float, float, float, float], text: str) -> None:
    canvas.figure.text(
        outer[0] + outer[2] / 2,
        outer[1] + outer[3] / 2 - 0.1 / canvas.height,
        text,
        color=MUTED,
        fontsize=11,
        ha="center",
        va="center",
    )


def _style(ax: Axes) -> None:
    ax.set_facecolor(PANEL)
    ax.tick_params(colors=MUTED, labelsize=8, length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(color=BORDER, linewidth=0.6)
    ax.set_axisbelow(True)


def _unit(panel: dict[str, Any]) -> str | None:
    return panel.get("fieldConfig", {}).get("defaults", {}).get("unit")


def _draws_bars(panel: dict[str, Any]) -> tuple[bool, bool]:
    custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
    return custom.get("drawStyle") == "bars", custom.get("stacking", {}).get("mode") == "normal"


def draw_timeseries(
    canvas: Canvas, outer: tuple[float, float, float, float], data: PanelData, span: TimeRange, step_s: float
) -> None:
    span = data.span or span
    series = [s for s in data.series if any(v is not None for v in s.values)]
    if not series:
        _message(canvas, outer, data.note or "No data")
        return
    # a short panel keeps its legend on the right, where it does not eat the plot's height
    legend_right = outer[3] * canvas.height < 2.5
    columns = 1 if legend_right else max(1, int(outer[2] * WIDTH_IN / 2.2))
    legend_rows = 0 if legend_right else math.ceil(len(series) / columns)
    ax = canvas.inset(outer, 0.7, 0.35 + 0.2 * legend_rows, 1.3 if legend_right else 0.15, 0.38)
    _style(ax)
    bars, stacked = _draws_bars(data.panel)
    width_days = _bar_seconds(series, step_s) / 86400 * 0.8
    base: dict[datetime, float] = {}
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        points = [(t, v) for t, v in zip(s.times, s.values, strict=True) if v is not None]
        times = [t for t, _v in points]
        values = [v for _t, v in points]
        if bars:
            bottoms = [base.get(t, 0.0) for t in times] if stacked else [0.0] * len(times)
            ax.bar(
                mdates.date2num(times),
                values,
                width=width_days,
                bottom=bottoms,
                color=color,
                alpha=0.85,
                label=s.name,
                align="edge",
            )
            if stacked:
                for t, v, b in zip(times, values, bottoms, strict=True):
                    base[t] = b + v
        else:
            ax.plot(
                times,
                values,
                color=color,
                linewidth=1.4,
                label=s.name,
                marker="o" if len(times) < 3 else None,
                markersize=3,
            )
    ax.set_xlim(span.start, span.end)
    short = (span.end - span.start).total_seconds() < 1800
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S" if short else "%H:%M", tz=UTC))
    unit = _unit(data.panel)
    ax.yaxis.set_major_formatter(lambda v, _pos: format_value(v, unit))
    ax.set_ylim(bottom=min(0, ax.get_ylim()[0]))
    ax.legend(
        loc="center left" if legend_right else "upper left",
        bbox_to_anchor=(1.01, 0.5) if legend_right else (0, -0.08),
        ncol=columns,
        frameon=False,
        fontsize=8,
        labelcolor=TEXT,
        handlelength=1.2,
        borderaxespad=0,
    )


def _bar_seconds(series: Sequence[Series], step_s: float) -> float:
    """A bar's width: the smallest gap between the series' time buckets (a panel may group by a fixed
    5 min while `$__interval` is 1 min), else the interval."""
    times = sorted({t for s in series for t in s.times})
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    return min(gaps) if gaps else step_s


def _stat_fields(data: PanelData) -> list[tuple[str, Any]]:
    """(name, value) of each field a stat panel shows: the last value of each series or column."""
    fields: list[tuple[str, Any]] = []
    for s in data.series:
        last = next((v for v in reversed(s.values) if v is not None), None)
        fields.append((s.name, last))
    for table in data.tables:
        last_row = table.rows[-1] if table.rows else (None,) * len(table.columns)
        fields.extend(zip(table.columns, last_row, strict=True))
    return fields


def draw_stat(canvas: Canvas, outer: tuple[float, float, float, float], data: PanelData) -> None:
    fields = _stat_fields(data)
    if not fields:
        _message(canvas, outer, data.note or "No data")
        return
    unit = _unit(data.panel)
    x, y, w, h = outer
    usable = h - 0.35 / canvas.height
    for i, (name, value) in enumerate(fields):
        cx = x + w * (i + 0.5) / len(fields)
        color = PALETTE[0] if value is not None else MUTED
        size = min(34, 200 / max(4, len(fields) * 3))
        canvas.figure.text(
            cx,
            y + usable * 0.52,
            format_value(value, unit),
            color=color,
            fontsize=size,
            weight="bold",
            ha="center",
            va="center",
        )
        if len(fields) > 1 or name not in ("value", ""):
            canvas.figure.text(cx, y + usable * 0.14, name, color=MUTED, fontsize=9, ha="center", va="center")


def draw_table(canvas: Canvas, outer: tuple[float, float, float, float], data: PanelData) -> None:
    """The first rows and columns that fit the panel (Grafana scrolls the rest), and how many that is."""
    if not data.tables or not data.tables[0].rows:
        _message(canvas, outer, data.note or "No data")
        return
    table: Table = data.tables[0]
    row_in, column_in = 0.24, 1.1
    height_in = outer[3] * canvas.height - 0.45
    rows = table.rows[: max(1, int(height_in / row_in) - 1)]
    width = max(1, min(len(table.columns), int((outer[2] * WIDTH_IN - 0.16) / column_in)))
    ax = canvas.inset(outer, 0.08, 0.08 + max(0.0, height_in - (len(rows) + 1) * row_in), 0.08, 0.37)
    ax.axis("off")
    cells = [[_cell(v) for v in row[:width]] for row in rows]
    drawn = ax.table(
        cellText=cells, colLabels=table.columns[:width], loc="upper left", cellLoc="left", bbox=(0, 0, 1, 1)
    )
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(8.5)
    for (r, _c), cell in drawn.get_celld().items():
        cell.set_edgecolor(BORDER)
        cell.set_facecolor("#22252b" if r == 0 else PANEL)
        cell.get_text().set_color(TEXT if r else "#6e9fff")
    hidden = []
    if len(table.rows) > len(rows):
        hidden.append(f"{len(rows)} of {len(table.rows)} rows")
    if len(table.columns) > width:
        hidden.append(f"{width} of {len(table.columns)} columns")
    if hidden:
        canvas.figure.text(
            outer[0] + outer[2] - 0.1 / WIDTH_IN,
            outer[1] + outer[3] - 0.16 / canvas.height,
            ", ".join(hidden),
            color=MUTED,
            fontsize=8,
            ha="right",
            va="center",
        )


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%H:%M:%S")
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return format_value(value) if not isinstance(value, str) else value


def draw_bargauge(canvas: Canvas, outer: tuple[float, float, float, float], data: PanelData) -> None:
    fields = [(name, float(v)) for name, v in _stat_fields(data) if v is not None]
    if not fields:
        _message(canvas, outer, data.note or "No data")
        return
    ax = canvas.inset(outer, 1.6, 0.15, 0.9, 0.4)
    _style(ax)
    ax.grid(False)
    names = [n for n, _v in fields]
    values = [v for _n, v in fields]
    ax.barh(names, values, color=[PALETTE[i % len(PALETTE)] for i in range(len(fields))])
    ax.invert_yaxis()
    ax.set_xticks([])
    for i, v in enumerate(values):
        ax.text(v, i, " " + format_value(v, _unit(data.panel)), color=TEXT, va="center", fontsize=9)


def draw_row(canvas: Canvas, data: PanelData) -> None:
    x, y, _w, h = canvas.box(data.panel["gridPos"], pad_in=0.0)
    canvas.figure.text(
        x + 0.05 / WIDTH_IN,
        y + h / 2,
        data.panel["title"],
        color=TEXT,
        fontsize=12,
        weight="bold",
        va="center",
    )


def render(title: str, panels: Sequence[PanelData], span: TimeRange, step_s: float, out: Path) -> Path:
    """Draw every panel to one PNG at `out`."""
    grid_height = max(p.panel["gridPos"]["y"] + p.panel["gridPos"]["h"] for p in panels)
    canvas = Canvas(title, span, grid_height)
    for data in panels:
        kind = data.panel.get("type")
        if kind == "row":
            draw_row(canvas, data)
            continue
        outer = _panel_frame(canvas, data)
        if kind == "timeseries":
            draw_timeseries(canvas, outer, data, span, step_s)
        elif kind == "stat":
            draw_stat(canvas, outer, data)
        elif kind == "table":
            draw_table(canvas, outer, data)
        elif kind == "bargauge":
            draw_bargauge(canvas, outer, data)
        else:
            _message(canvas, outer, f"panel type {kind} is not drawn in the preview")
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.figure.savefig(out, dpi=90, facecolor=BACKGROUND)
    plt.close(canvas.figure)
    return out
