"""Dagster's freshness check on telemetry's hours and its sensor, on a real instance and real runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import (
    AssetCheckSeverity,
    DagsterInstance,
    Definitions,
    RunRequest,
    SkipReason,
    build_sensor_context,
    instance_for_test,
)

from dagster_project.definitions import build_definitions
from dagster_project.freshness import SENSOR_NAME, TELEMETRY_FRESHNESS_CHECK
from iot_core.settings import Settings
from tests.support.freshness import evaluate_freshness_check

pytestmark = pytest.mark.services

HOUR_KEY = "%Y-%m-%d-%H:00"


def sensor_tick(defs: Definitions, instance: DagsterInstance) -> RunRequest | SkipReason:
    """One evaluation of the freshness sensor, as the daemon makes it."""
    context = build_sensor_context(instance=instance, definitions=defs, sensor_name=SENSOR_NAME)
    return defs.resolve_sensor_def(SENSOR_NAME)(context)


def materialize_hour(defs: Definitions, instance: DagsterInstance, key: str) -> None:
    """The whole hour through micro_batch_job, which leaves the freshness check to its sensor."""
    result = defs.resolve_job_def("micro_batch_job").execute_in_process(partition_key=key, instance=instance)
    assert result.success
    assert TELEMETRY_FRESHNESS_CHECK.name not in {c.check_name for c in result.get_asset_check_evaluations()}


def test_the_hour_due_at_the_deadline_passes_once_materialized_and_fails_while_overdue(
    clean_db: str, settings: Settings, tmp_path: Path
) -> None:
    # a deadline half an hour ago: the same tick is the latest one for the whole test
    tick = (datetime.now(UTC) - timedelta(minutes=30)).replace(second=0, microsecond=0)
    deadline = {"freshness_deadline_cron": f"{tick.minute} * * * *"}
    defs = build_definitions(settings.model_copy(update=deadline))
    due = tick.strftime(HOUR_KEY)  # the partitions end an hour ahead: the hour the tick falls in is due
    earlier = (tick - timedelta(hours=1)).strftime(HOUR_KEY)

    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        request = sensor_tick(defs, instance)
        assert isinstance(request, RunRequest), request  # never evaluated: the sensor asks for it
        assert list(request.asset_check_keys or []) == [TELEMETRY_FRESHNESS_CHECK]

        never = evaluate_freshness_check(defs, instance)
        assert not never.passed and due in never.description and "never" in never.description

        materialize_hour(defs, instance, earlier)
        overdue = evaluate_freshness_check(defs, instance)
        assert not overdue.passed and overdue.severity == AssetCheckSeverity.WARN
        assert "overdue" in overdue.description and due in overdue.description
        assert isinstance(sensor_tick(defs, instance), SkipReason)  # failed, nothing new materialized

        materialize_hour(defs, instance, due)
        request = sensor_tick(defs, instance)  # telemetry changed since the failure: evaluate again
        assert isinstance(request, RunRequest), request
        fresh = evaluate_freshness_check(defs, instance)
        assert fresh.passed and due in fresh.description
        fresh_until = fresh.metadata["dagster/fresh_until_timestamp"].value
        assert fresh_until == (tick + timedelta(hours=1)).timestamp()  # the next deadline
        assert isinstance(sensor_tick(defs, instance), SkipReason)  # cannot be overdue before then
