"""The Dagster side: assets, checks, sensor, compaction, the library beneath them."""
