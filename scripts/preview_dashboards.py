"""Fill a database through the pipeline with a few hours of simulated history, then draw both Grafana
dashboards from it (`dashboard_preview`), one PNG each.

Run from the repository root with the database, Redis stream and window to use in the environment, e.g.

    IOT_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/preview IOT_STREAM_PREFIX=preview:raw \\
    IOT_WINDOW_SECONDS=300 IOT_DAGSTER_HOME=$(mktemp -d) .venv/bin/python scripts/preview_dashboards.py

The database is created and migrated; the stream prefix should be one no listener writes to. The fill
drives the real sensor and job in-process (the test suite's helper). With --live-minutes the
listener panels come from a real listener scraped by a real Prometheus for that long.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboard_preview.preview import render_all
from dashboard_preview.queries import PrometheusSource, TimeRange
from iot_core.settings import get_settings
from iot_etl.migrate import apply_migrations, ensure_database
from tests.support.fill import fill_through_the_pipeline
from tests.support.prometheus import scraped_listener


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("dash-shots"), help="folder for the PNG files")
    parser.add_argument("--history-hours", type=float, default=2.5, help="simulated history to fill")
    parser.add_argument("--messages", type=int, default=3000, help="messages spread over that history")
    parser.add_argument("--hours", type=float, default=3.0, help="the dashboards' time range: last N hours")
    parser.add_argument("--skip-fill", action="store_true", help="draw what the database already holds")
    parser.add_argument(
        "--live-minutes",
        type=float,
        default=0,
        help="also run a listener scraped by a real Prometheus (Debian's `prometheus`) for this long, "
        "publishing simulated messages to it, and draw the listener panels from that",
    )
    args = parser.parse_args()
    settings = get_settings()
    url = settings.database_url.get_secret_value()
    if not args.skip_fill:
        ensure_database(url)
        apply_migrations(url)
        fill_through_the_pipeline(
            settings, args.messages, spread=timedelta(hours=args.history_hours), timeout_s=1800
        )
    if args.live_minutes:
        with tempfile.TemporaryDirectory() as workdir, scraped_listener(settings, Path(workdir)) as scraped:
            scraped.publish_for(settings, args.live_minutes * 60)
            source = PrometheusSource(scraped.prometheus_url, TimeRange.last(args.live_minutes / 60))
            draw(url, args.out, TimeRange.last(args.hours), source)
    else:
        draw(url, args.out, TimeRange.last(args.hours), None)


def draw(url: str, out: Path, span: TimeRange, prometheus: PrometheusSource | None) -> None:
    for rendered in render_all(url, out, span, prometheus=prometheus):
        ran = sum(p.queries_run for p in rendered.panels)
        print(f"{rendered.png}: {rendered.title}, {len(rendered.panels)} panels, {ran} queries")


if __name__ == "__main__":
    main()
