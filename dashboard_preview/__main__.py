"""`python -m dashboard_preview`: draw both dashboards from a filled database to PNG files."""

from __future__ import annotations

import argparse
from pathlib import Path

from dashboard_preview.preview import render_all
from dashboard_preview.queries import PrometheusSource, TimeRange
from iot_core.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m dashboard_preview", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("dash-shots"), help="folder for the PNG files")
    parser.add_argument("--hours", type=float, default=3.0, help="time range: the last N hours")
    parser.add_argument(
        "--prometheus-url",
        help="a Prometheus scraping the listener (e.g. http://127.0.0.1:9090); without it the listener "
        "panels say they were not scraped",
    )
    parser.add_argument(
        "--prometheus-minutes",
        type=float,
        help="the range that Prometheus has samples for, if shorter than --hours (a short scrape)",
    )
    args = parser.parse_args()
    span = TimeRange.last(args.hours)
    prometheus = None
    if args.prometheus_url:
        own = TimeRange.last(args.prometheus_minutes / 60) if args.prometheus_minutes else span
        prometheus = PrometheusSource(args.prometheus_url, own)
    database_url = get_settings().database_url.get_secret_value()
    for rendered in render_all(database_url, args.out, span, prometheus=prometheus):
        ran = sum(p.queries_run for p in rendered.panels)
        print(f"{rendered.png}: {rendered.title}, {len(rendered.panels)} panels, {ran} queries")


if __name__ == "__main__":
    main()
