"""Run metadata shared by the domains: rejection reasons and an hour's totals as values the UI plots."""

from __future__ import annotations

import psycopg
from dagster import MetadataValue

from dagster_project.lib.hour_summaries import HourCounts, hour_summary
from dagster_project.lib.windows import partition_window

#: Who answers for the assets (shown on every asset's page and filterable in the catalog); Dagster takes
#: an e-mail address or `team:<name>`.
OWNERS = ["team:telemetry"]
#: How many examples a check lists in its metadata (gaps, devices, reject groups).
SAMPLE = 10


def summary_metadata(summary: dict[str, object]) -> dict[str, object]:
    reasons = summary["reject_reasons"]
    assert isinstance(reasons, dict)
    return {
        **{k: v for k, v in summary.items() if k != "reject_reasons" and v is not None},
        **reasons_metadata(reasons),
        "summary_of_hour": True,
    }


def reasons_metadata(reasons: dict[str, int]) -> dict[str, object]:
    """Rejections by reason: a list to read, and one number per reason that the UI plots."""
    return {
        "reject_reasons": MetadataValue.md("\n".join(f"- {r}: {n}" for r, n in reasons.items()) or "none"),
        **{f"rejected_{reason}": n for reason, n in reasons.items()},
    }


def hour_summary_metadata(
    conn: psycopg.Connection, key: str, counts: HourCounts | None = None
) -> dict[str, object]:
    """The totals of hour partition `key` so far, as plottable metadata (its `counts` read from the
    tables when None)."""
    window = partition_window(key)
    summary = hour_summary(conn, *window.utc_bounds, counts)
    return {"range": window.label, **summary_metadata(summary)}
