"""Ingest: `raw_messages`, `telemetry` and `hourly_rollups`, the micro-batch job and the sensor that
requests its runs."""
