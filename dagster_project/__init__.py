"""The Dagster code location.

Its modules build definitions with two Dagster features that are marked beta/preview and used here on
purpose: `backfill_policy` on the hourly assets and `partitions_def` on the asset checks. Dagster warns
at every definition, in every process that loads the location (webserver, daemon, each run); those
two warnings, and only those, are silenced here, before any module of the location builds one (by their
messages: naming their classes would import Dagster with any module of this package, and `iot-etl up` uses
the pure `dagster_project.lib` without it).
"""

import warnings

# Dagster's BetaWarning and PreviewWarning
warnings.filterwarnings("ignore", category=Warning, message=r"Parameter `backfill_policy` ")
warnings.filterwarnings("ignore", category=Warning, message=r"Specifying a partitions_def on an ")
