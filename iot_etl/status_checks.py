"""The status lines about the asset checks: each check's newest result, whatever run is in flight.

Dagster's Checks tab shows a check's result only while it judged the asset's newest materialization, so
while a window's run is in flight (it materializes the hour again) the tab shows the checks running; their
results stay in each check's execution history, and here."""

from __future__ import annotations

from datetime import UTC, datetime

from iot_core.settings import Settings
from iot_etl.dagster_instance import dagster_home
from iot_etl.status_retention import error_text

Line = tuple[str, str, str]


def check_lines(settings: Settings) -> list[Line]:
    """One line per check of an hour: its newest evaluation, or that it has none yet."""
    home = dagster_home(settings)
    if not (home / "dagster.yaml").exists():
        return [("checks", "results", f"unknown (no dagster.yaml in {home})")]
    try:
        from dagster import AssetCheckKey, AssetKey, DagsterInstance

        from dagster_project.dagster_internals import completed_check_executions
        from dagster_project.defs.quality.checks import HOUR_CHECKS

        with DagsterInstance.from_config(str(home)) as instance:
            return [
                ("checks", check.name, result_text(completed_check_executions(instance, key, limit=1)))
                for check in HOUR_CHECKS
                for key in [AssetCheckKey(AssetKey(check.asset), check.name)]
            ]
    except Exception as exc:  # status reports every part, whatever one of them raises
        return [("checks", "results", error_text(exc))]


def result_text(records: list) -> str:
    """`passed, hour 2026-12-07-17:00, 17:23:10 UTC (run 3cfd05f9)` or `FAILED (ERROR): <why>, hour ...`."""
    if not records:
        return "not evaluated yet"
    record = records[0]
    evaluation = record.event.dagster_event.event_specific_data if record.event else None
    when = datetime.fromtimestamp(record.create_timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    where = f"hour {record.partition}, {when} (run {record.run_id[:8]})"
    if evaluation is None or evaluation.passed:
        return f"passed, {where}"
    why = (evaluation.description or "").strip().splitlines()
    return f"FAILED ({evaluation.severity.value}): {why[0] if why else 'see the check'}, {where}"
