"""Dagster definitions by domain: `ingest` (the partitioned assets, their job and sensor), `quality` (checks
per hour, freshness), `maintenance` (compaction, its checks, job and schedule). Each domain names its
files by the kind of object they hold: assets, checks, jobs, schedules, sensors. The modules beside them
(resources, partitions, the run's window, metadata, transient faults) are shared by the domains."""
