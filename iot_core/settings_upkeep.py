"""Settings of upkeep: compaction and retention, the simulator, the services `iot-etl up` starts itself and
the broker configuration the product generates. `iot_core.settings.Settings` adds the pipeline's own; this
class holds the environment's reading rules (`IOT_*`, `.env`) for both."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class UpkeepSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IOT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- compaction and retention --------------------------------------------------------------------
    compaction_cron: str = Field(
        "7 * * * *", description="When `compaction_schedule` runs compaction_job (cron, UTC; hourly)."
    )
    stream_trim_margin_s: int = Field(
        3600,
        ge=0,
        description="Archived stream entries younger than this are kept for re-runs, unless Redis is above "
        "80 % of its maxmemory (then every archived entry is trimmed).",
    )
    retention_raw_days: int = Field(
        90, ge=0, description="Days `raw_messages` (the archive) is kept, by arrival (0: for ever)."
    )
    retention_measurements_days: int = Field(
        365, ge=0, description="Days `measurements` are kept, by their timestamp (0: for ever)."
    )
    retention_events_days: int = Field(
        365, ge=0, description="Days `events` are kept, by arrival (0: for ever)."
    )
    retention_rejected_days: int = Field(
        90, ge=0, description="Days `rejected` rows are kept, by arrival (0: for ever)."
    )
    retention_batches_days: int = Field(
        90, ge=0, description="Days `batches` rows are kept, by range end (0: for ever)."
    )
    retention_rollups_days: int = Field(
        730,
        ge=0,
        description="Days `hourly_rollups` are kept, by their hour (0: for ever); longer than `measurements` "
        "by default, so the hours stay summed up after their readings are gone.",
    )
    retention_delete_batch_rows: int = Field(
        10_000, ge=100, description="Rows per DELETE statement when retention deletes rows (plain tables)."
    )
    compaction_budget_s: int = Field(
        300, ge=1, description="Time one compaction run may spend deleting rows and pruning runs."
    )
    timescale_chunk_interval: str = Field(
        "1 day", description="TimescaleDB chunk interval of the hypertables (new chunks)."
    )
    timescale_compress_after: str = Field(
        "7 days", description="TimescaleDB compresses `measurements` chunks older than this."
    )
    timescale_compress_raw_after: str = Field(
        "2 days", description="TimescaleDB compresses `raw_messages` chunks (the archive) older than this."
    )
    dagster_run_retention_days: float = Field(
        7.0,
        gt=0,
        description="Micro-batch runs older than this many days (fractions allowed: 0.25 is 6 hours) "
        "are deleted, never those of the open hour; each closed hour keeps one summary materialization.",
    )

    # --- simulator -----------------------------------------------------------------------------------
    sim_rate: float = Field(20.0, gt=0, description="Simulator messages per second.")
    sim_devices: int = Field(8, ge=1, description="Simulated devices per format (plain, event).")
    sim_bad_share: float = Field(0.05, ge=0, le=1, description="Share of deliberately bad messages.")
    sim_seed: int = Field(42, description="Simulator random seed.")

    # --- services `iot-etl up` starts itself --------------------------------------------------------
    embedded_services: Literal["auto", "always", "never"] = Field(
        "auto",
        description="`up` starts PostgreSQL, Redis and MQTT itself where none answers: `auto` only at "
        "the default addresses, `always` at any local address, `never` not at all.",
    )

    # --- broker config we generate -------------------------------------------------------------------
    broker_max_queued_bytes: int = Field(
        256 * 1024 * 1024, ge=0, description="Per-client queue bound of the generated broker config."
    )
