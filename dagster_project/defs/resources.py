"""Resources: Redis streams, the telemetry database and an MQTT publisher, configured from settings."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import psycopg
from dagster import ConfigurableResource, EnvVar, Failure
from pydantic import Field, PrivateAttr

from dagster_project.defs.run_window import RESOURCE_KEY as RUN_WINDOW_KEY
from dagster_project.defs.run_window import RunWindowResource
from dagster_project.lib.feedback_sender import FeedbackSender
from dagster_project.lib.retention import RetentionRule
from dagster_project.lib.rollups import PARTS_KEPT
from dagster_project.lib.windows import ClosingWindow, Window
from iot_core.mqtt.endpoint import MqttEndpoint
from iot_core.redis_client import RedisClient, redis_client, streams_clock_ms
from iot_core.settings import Settings
from iot_core.settings_secrets import export_secrets
from iot_core.streams import EntryId, stream_names

if TYPE_CHECKING:
    from iot_core.formats.batch import DecodeOptions

log = logging.getLogger(__name__)

#: A run started before its window closed lands what has closed at least this much at a time.
LAND_STEP_MS = 1000


class WindowNotClosedError(Failure):
    """A run of a window that has not closed: refused, and not retried (it is not a passing fault)."""

    def __init__(self, description: str) -> None:
        super().__init__(description, allow_retries=False)


class BatchPolicyResource(ConfigurableResource):
    """How arrival time is cut into micro-windows and how devices' messages are read: the one place the
    sensor and the assets take these from (shown on the UI's resource page)."""

    window_seconds: int = Field(description="Micro-window length; divides an hour.")
    window_grace_ms: int = Field(
        description="How long past a window's end (Redis clock) it counts as closed."
    )
    sensor_lead_ms: int = Field(
        description="Runs are requested this long before their window closes (at most half a window) "
        "and land what has closed while they wait for the rest; a run of a window further from closing "
        "is refused."
    )
    skip_empty_windows: bool = Field(description="No run for a closed window without entries.")
    max_runs_per_tick: int = Field(description="Upper bound of run requests per sensor tick.")
    heal_after_ms: int = Field(
        description="A closed range with entries that has no archived and decoded batch this long after it "
        "closed is run again (and again after as long, while it fails)."
    )
    heal_lookback_hours: int = Field(description="How far back the sensor looks for ranges to run again.")
    device_timezone: str = Field(description="Zone of naive device timestamps.")
    device_ts_max_future_s: int = Field(
        description="A device timestamp further ahead of arrival is not sane."
    )
    device_ts_min_year: int = Field(description="A device timestamp before this year is not sane.")
    max_payload_bytes: int = Field(description="A larger payload is rejected unread.")
    max_field_chars: int = Field(description="A longer text field or value is rejected.")
    max_meta_bytes: int = Field(description="A larger event `meta` (as JSON) is rejected.")
    redelivery_horizon_s: int = Field(
        description="A message the broker sent again is a duplicate of an identical one arrived at most "
        "this long before it.",
    )
    decode_page_rows: int = Field(
        default=50_000, description="Raw messages decoded and stored at a time within a window's run."
    )

    @property
    def redelivery_horizon(self) -> timedelta:
        return timedelta(seconds=self.redelivery_horizon_s)

    @property
    def window_ms(self) -> int:
        return self.window_seconds * 1000

    def decode_options(self) -> DecodeOptions:
        # the decoders import polars, which the code location does not load (see `build_ingest_assets`)
        from iot_core.formats.batch import DecodeOptions

        return DecodeOptions(
            default_tz=ZoneInfo(self.device_timezone),
            max_future_s=self.device_ts_max_future_s,
            min_year=self.device_ts_min_year,
            max_payload_bytes=self.max_payload_bytes,
            max_field_chars=self.max_field_chars,
            max_meta_bytes=self.max_meta_bytes,
        )

    @property
    def lead_ms(self) -> int:
        """How long before its window closes a run is requested: the setting, at most half a window."""
        return min(self.sensor_lead_ms, self.window_ms // 2)

    def closing(self, redis: RedisStreamsResource, window: Window) -> ClosingWindow:
        """`window` to be read as it closes (runs are requested up to the lead early); a window further
        from closing than the lead is refused."""
        remaining = window.end_ms + self.window_grace_ms - redis.now_ms()
        if remaining > self.lead_ms + self.window_grace_ms:
            raise WindowNotClosedError(
                f"the window ending {window.end_ms} closes in {remaining / 1000:.1f} s; "
                "runs only process closed windows"
            )
        return ClosingWindow(window, self.window_grace_ms, LAND_STEP_MS, redis.now_ms)

    def closed_until_ms(self, redis: RedisStreamsResource) -> int:
        """The end of what has closed by now (Redis clock, minus the grace)."""
        return redis.now_ms() - self.window_grace_ms


class RedisStreamsResource(ConfigurableResource):
    """The raw streams: `url` may hold a password, so it is given as an EnvVar. The resource owns its
    client (one connection pool per run or sensor tick), made on first use; with `cluster` a Redis Cluster
    client, whose commands on a stream go to the master serving that stream's slot."""

    url: str
    stream_prefix: str
    shards: int = 1
    cluster: bool = False
    _client: RedisClient | None = PrivateAttr(default=None)

    def client(self) -> RedisClient:
        if self._client is None:
            mode = "cluster" if self.cluster else "standalone"
            self._client = redis_client(self.url, mode, socket_timeout=30, socket_connect_timeout=5)
        return self._client

    def streams(self) -> list[str]:
        return stream_names(self.stream_prefix, self.shards, cluster=self.cluster)

    def now_ms(self) -> int:
        """Redis's own clock: the one that assigns entry IDs, so the one that decides what has closed (in a
        cluster the earliest clock of the masters serving the shards: `iot_core.redis_client`)."""
        return streams_clock_ms(self.client(), self.streams())

    def read_range(
        self, stream: str, window: Window, page: int = 5000
    ) -> Iterator[list[tuple[bytes, dict[bytes, bytes]]]]:
        """Entries of `window` in pages, each page starting after the previous one's last ID."""
        low, high = window.id_range
        client = self.client()
        while True:
            entries = client.xrange(stream, low, high, count=page)
            if not entries:
                return
            yield entries
            if len(entries) < page:
                return
            last = EntryId.parse(entries[-1][0])
            low = f"({last}"

    def has_entries(self, window: Window) -> bool:
        low, high = window.id_range
        client = self.client()
        return any(client.xrange(stream, low, high, count=1) for stream in self.streams())

    def first_entry_ms(self) -> int | None:
        client = self.client()
        firsts = [client.xrange(stream, "-", "+", count=1) for stream in self.streams()]
        ids = [EntryId.parse(entries[0][0]).ms for entries in firsts if entries]
        return min(ids) if ids else None


class DatabaseResource(ConfigurableResource):
    """The telemetry database: `url` may hold a password, so it is given as an EnvVar. `database` is the
    writer's (rows only); `owner_database` the schema owner's, for compaction's retention (TimescaleDB
    policies, `drop_chunks`) and refreshes of a continuous aggregate, which only an owner may run."""

    url: str

    @contextmanager
    def connect(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A connection whose block is one transaction: committed on success, rolled back on error; with
        `autocommit`, every statement commits on its own (for what cannot run in a transaction block)."""
        with psycopg.connect(self.url, connect_timeout=10, autocommit=autocommit) as conn:
            yield conn


class MqttPublisherResource(ConfigurableResource):
    """Publishes ACKs and dead letters back to devices (QoS 1, waiting for every PUBACK)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    client_id_prefix: str = "iot-etl-dagster"
    ack_topic_template: str = "qs/v1/{device_id}/acks"
    deadletter_topic: str = "qs/v1/deadletter"

    def endpoint(self) -> MqttEndpoint:
        def path(value: str | None) -> Path | None:
            return Path(value) if value else None

        return MqttEndpoint(
            self.host,
            self.port,
            self.username,
            self.password,
            path(self.tls_ca),
            path(self.tls_cert),
            path(self.tls_key),
        )

    def feedback_sender(self) -> FeedbackSender:
        """A sender of a run's ACKs and dead letters at QoS 1, page by page (see `FeedbackSender`)."""
        return FeedbackSender(self.endpoint(), self.client_id_prefix)


class QualityPolicyResource(ConfigurableResource):
    """Thresholds of the data-quality checks (shares are of an hour's raw messages or readings)."""

    reject_warn_share: float = Field(description="Rejected share above which schema_pass_rate warns.")
    reject_error_share: float = Field(description="Rejected share above which it is an ERROR.")
    duplicate_warn_share: float = Field(description="Redelivered share above which duplicates warns.")
    duplicate_error_share: float = Field(description="Redelivered share above which it is an ERROR.")
    implausible_error_share: float = Field(
        description="Share of readings out of range above which plausibility is an ERROR (any: WARN)."
    )
    silent_after_s: int = Field(description="A device that sent before and nothing for this long is silent.")


class CompactionPolicyResource(ConfigurableResource):
    """What compaction keeps and for how long (shown on the UI's resource page)."""

    stream_trim_margin_s: int = Field(description="Stream entries younger than this are never trimmed.")
    retention_raw_days: int = Field(description="Days raw_messages is kept (0: for ever).")
    retention_measurements_days: int = Field(description="Days measurements are kept (0: for ever).")
    retention_events_days: int = Field(description="Days events are kept (0: for ever).")
    retention_rejected_days: int = Field(description="Days rejected rows are kept (0: for ever).")
    retention_batches_days: int = Field(description="Days batches rows are kept (0: for ever).")
    retention_rollups_days: int = Field(description="Days hourly_rollups are kept (0: for ever).")
    delete_batch_rows: int = Field(description="Rows per DELETE statement on plain tables.")
    budget_s: int = Field(description="Time a run may spend deleting rows and pruning runs.")
    chunk_interval: str = Field(description="TimescaleDB chunk interval.")
    compress_after: str = Field(description="TimescaleDB compresses measurements chunks older than this.")
    compress_raw_after: str = Field(description="TimescaleDB compresses raw_messages chunks older than this.")
    run_retention_days: float = Field(
        description="Micro-batch runs older than this many days (fractions allowed) are deleted."
    )

    def compression(self) -> dict[str, str]:
        """How old a hypertable's chunks get before they are compressed, by hypertable."""
        return {"measurements": self.compress_after, "raw_messages": self.compress_raw_after}

    def rules(self) -> list[RetentionRule]:
        return [
            RetentionRule("raw_messages", "arrived_at", self.retention_raw_days),
            RetentionRule("measurements", "ts", self.retention_measurements_days),
            RetentionRule("events", "ts_server", self.retention_events_days),
            RetentionRule("rejected", "arrived_at", self.retention_rejected_days),
            RetentionRule("batches", "range_end", self.retention_batches_days),
            RetentionRule("hourly_rollups", "hour", self.retention_rollups_days),
            RetentionRule("rollup_parts", "slot", PARTS_KEPT.days),
            # element counts and feedback records serve re-runs of archived windows: kept as long as those
            RetentionRule("raw_elements", "arrived_at", self.retention_raw_days),
            RetentionRule("feedback_sent", "sent_at", self.retention_raw_days),
        ]


def resources_from_settings(settings: Settings) -> dict[str, Any]:
    """Every resource of the code location. Values that can hold a secret reach Dagster as EnvVar, so the
    UI shows the variable's name, never its value."""
    secrets = export_secrets(settings)
    publisher = MqttEndpoint.for_role(settings, "publisher")  # the service listener when IOT_SECURITY is on
    return {
        # the run's window: configured per run by the sensor (its runs), else whole hours
        RUN_WINDOW_KEY: RunWindowResource.configure_at_launch(),
        "policy": BatchPolicyResource(
            window_seconds=settings.window_seconds,
            window_grace_ms=settings.window_grace_ms,
            sensor_lead_ms=settings.sensor_lead_ms,
            skip_empty_windows=settings.sensor_skip_empty_windows,
            max_runs_per_tick=settings.sensor_max_runs_per_tick,
            heal_after_ms=settings.sensor_heal_after_s * 1000,
            heal_lookback_hours=settings.sensor_heal_lookback_hours,
            device_timezone=settings.device_timezone,
            device_ts_max_future_s=settings.device_ts_max_future_s,
            device_ts_min_year=settings.device_ts_min_year,
            max_payload_bytes=settings.max_payload_bytes,
            max_field_chars=settings.max_field_chars,
            max_meta_bytes=settings.max_meta_bytes,
            decode_page_rows=settings.decode_page_rows,
            redelivery_horizon_s=settings.redelivery_horizon_s,
        ),
        "redis": RedisStreamsResource(
            url=EnvVar(secrets["redis_url"]),
            stream_prefix=settings.stream_prefix,
            shards=settings.stream_shards,
            cluster=settings.redis_cluster,
        ),
        "database": DatabaseResource(url=EnvVar(secrets["database_url"])),
        # the schema owner (IOT_DATABASE_OWNER_URL, else the writer's): for what only an owner may do
        "owner_database": DatabaseResource(
            url=EnvVar(secrets.get("database_owner_url", secrets["database_url"]))
        ),
        "quality": QualityPolicyResource(
            reject_warn_share=settings.quality_reject_warn_share,
            reject_error_share=settings.quality_reject_error_share,
            duplicate_warn_share=settings.quality_duplicate_warn_share,
            duplicate_error_share=settings.quality_duplicate_error_share,
            implausible_error_share=settings.quality_implausible_error_share,
            silent_after_s=settings.quality_silent_after_s,
        ),
        "mqtt": MqttPublisherResource(
            host=publisher.host,
            port=publisher.port,
            username=publisher.username,
            password=EnvVar(secrets["mqtt_password"]) if "mqtt_password" in secrets else None,
            tls_ca=str(publisher.tls_ca) if publisher.tls_ca else None,
            tls_cert=str(publisher.tls_cert) if publisher.tls_cert else None,
            tls_key=str(publisher.tls_key) if publisher.tls_key else None,
            client_id_prefix=settings.publisher_client_id,
            ack_topic_template=settings.ack_topic_template,
            deadletter_topic=settings.deadletter_topic,
        ),
        "compaction_policy": CompactionPolicyResource(
            stream_trim_margin_s=settings.stream_trim_margin_s,
            retention_raw_days=settings.retention_raw_days,
            retention_measurements_days=settings.retention_measurements_days,
            retention_events_days=settings.retention_events_days,
            retention_rejected_days=settings.retention_rejected_days,
            retention_batches_days=settings.retention_batches_days,
            retention_rollups_days=settings.retention_rollups_days,
            delete_batch_rows=settings.retention_delete_batch_rows,
            budget_s=settings.compaction_budget_s,
            chunk_interval=settings.timescale_chunk_interval,
            compress_after=settings.timescale_compress_after,
            compress_raw_after=settings.timescale_compress_raw_after,
            run_retention_days=settings.dagster_run_retention_days,
        ),
    }
