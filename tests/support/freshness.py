"""Evaluate the freshness check on telemetry the way a run from the UI does (the latest deadline tick)."""

from __future__ import annotations

from dagster import AssetCheckEvaluation, DagsterInstance, Definitions

from dagster_project.defs.quality.freshness_check import TELEMETRY_FRESHNESS_CHECK


def evaluate_freshness_check(defs: Definitions, instance: DagsterInstance) -> AssetCheckEvaluation:
    """The freshness check alone, in a run of the implicit asset job, judging the latest deadline tick."""
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection={TELEMETRY_FRESHNESS_CHECK}
    )
    [evaluation] = job.execute_in_process(instance=instance).get_asset_check_evaluations()
    return evaluation
