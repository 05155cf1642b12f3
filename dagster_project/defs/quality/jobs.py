"""Jobs of the quality domain: the freshness check alone, as its schedule runs it."""

from dagster import AssetSelection, define_asset_job

# The one helper Dagster's own freshness checks use for "the latest tick of a cron before now".
from dagster_project.defs.quality.freshness_check import JOB_NAME, TELEMETRY_FRESHNESS_CHECK

#: The check alone, as its schedule runs it (a named job reads better in the runs list than an anonymous one).
freshness_check_job = define_asset_job(
    JOB_NAME,
    selection=AssetSelection.checks(TELEMETRY_FRESHNESS_CHECK),
    description="Runs telemetry's `freshness_check` alone: is the hour due at the deadline materialized?",
)
