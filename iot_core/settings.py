"""The one settings object of the whole product.

Every process (listener, Dagster code location and run workers, simulator, CLI) reads its configuration
from here; no other module reads the environment. Values come from `IOT_*` environment variables or a
`.env` file in the working directory; the defaults work against services on localhost.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from iot_core.settings_upkeep import UpkeepSettings
from iot_core.settings_validation import SHARE_PREFIX, check_replicas, refuse_line_breaks, split_topics

DEFAULT_TOPICS = ("devices/#", "qs/v1/+/events", "stat/#", "tele/#")
#: A shared-subscription group or replica name: one topic level, no wildcard, empty allowed.
NAME_PATTERN = r"^[A-Za-z0-9._-]{0,64}$"


class Settings(UpkeepSettings):
    """Every setting: the pipeline's here, upkeep's (compaction, retention, the simulator, the services
    `up` starts, the generated broker configuration) in `UpkeepSettings`."""

    # --- storage -------------------------------------------------------------------------------------
    database_url: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/iot"),
        description="PostgreSQL/TimescaleDB URL the pipeline writes with (the writer role: rows, no DDL).",
    )
    database_owner_url: SecretStr | None = Field(
        None,
        description="URL of the role that owns the schema: `db migrate`, compaction and retention use it and "
        "`db migrate` creates the writer and reader roles named in the other URLs (default: "
        "IOT_DATABASE_URL, one role for everything, as on a developer machine).",
    )
    database_reader_url: SecretStr | None = Field(
        None,
        description="URL of the read-only role for dashboards (`db migrate` creates it; it can read the "
        "product's tables and nothing else).",
    )
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="Redis holding the raw streams, as the pipeline's user (read and trim the streams); in "
        "cluster mode any node, or several (`redis://USER:PASSWORD@host1:7000,host2:7000/0`) so that a "
        "client made while one is down finds the cluster.",
    )
    listener_redis_url: SecretStr | None = Field(
        None,
        description="Redis URL of the listener's user, which may only append to the streams "
        "(default: IOT_REDIS_URL).",
    )
    redis_mode: Literal["standalone", "cluster"] = Field(
        "standalone",
        description="`cluster`: the Redis URLs name any node of a Redis Cluster (or Valkey cluster), every "
        "part uses a cluster client, and the shards' names carry hash tags that spread them over the "
        "masters.",
    )
    redis_wait_replicas: int | None = Field(
        None,
        ge=0,
        description="Replicas that must confirm a batch of the listener's writes (`WAIT`) before it is "
        "acknowledged to the broker, so that a master's failover loses nothing acknowledged (default: 1 "
        "in cluster mode, 0 standalone; 0: acknowledge once the master has it).",
    )
    redis_wait_timeout_ms: int = Field(
        1000,
        ge=1,
        description="How long one `WAIT` waits for the replicas; a batch they did not confirm is not "
        "acknowledged and is written again.",
    )
    stream_prefix: str = Field(
        "iot:raw",
        description="Stream name; with shards > 1 the streams are `<prefix>:0..N-1` (in cluster mode "
        "`<prefix>:{<n>.<k>}`, a hash tag per shard).",
    )
    stream_shards: int = Field(
        1,
        ge=1,
        le=1024,
        description="Number of raw stream shards: standalone all on the one Redis of IOT_REDIS_URL (they "
        "split the stream and the listener's writes), in cluster mode spread over the masters. With more "
        "than one, each shard's windows are processed by runs of their own.",
    )

    # --- MQTT ----------------------------------------------------------------------------------------
    mqtt_host: str = Field("127.0.0.1", description="MQTT broker host.")
    mqtt_port: int = Field(1883, description="MQTT broker port.")
    mqtt_username: str | None = Field(None, description="MQTT user name (none: anonymous).")
    mqtt_password: SecretStr | None = Field(None, description="MQTT password.")
    mqtt_tls_ca: Path | None = Field(None, description="CA file; setting it turns TLS on.")
    mqtt_tls_cert: Path | None = Field(None, description="Client certificate for mTLS.")
    mqtt_tls_key: Path | None = Field(None, description="Client key for mTLS.")
    mqtt_keepalive_s: int = Field(30, ge=5, description="MQTT keepalive.")

    # --- identity and least privilege ----------------------------------------------------------------
    security: bool = Field(
        False,
        description="Devices and services authenticate with certificates: `up` issues what is missing in "
        "IOT_PKI_DIR, runs Mosquitto with a device listener (IOT_MQTT_TLS_PORT) and a service listener "
        "(IOT_MQTT_SERVICE_HOST:IOT_MQTT_SERVICE_PORT), and every service connects with its own certificate.",
    )
    pki_dir: Path = Field(
        Path(".iot-etl/pki"), description="Certificates and keys of `iot-etl certs` (mode 0700; keys 0600)."
    )
    mqtt_tls_port: int = Field(8883, gt=0, lt=65536, description="Device listener: mTLS, device CA.")
    mqtt_service_host: str = Field(
        "127.0.0.1", description="Service listener address (loopback or an internal network)."
    )
    mqtt_service_port: int = Field(8884, gt=0, lt=65536, description="Service listener: mTLS, service CA.")
    crl_days: int = Field(
        30,
        ge=2,
        le=3650,
        description="Days a certificate revocation list is valid; `up` re-signs it at half-life.",
    )
    device_max_msgs_per_s: float = Field(
        100.0,
        ge=0,
        description="Messages per second one device may send (burst 10x); excess is acknowledged but not "
        "written, counted and logged (0: no limit).",
    )
    device_max_bytes_per_s: int = Field(
        1024 * 1024,
        ge=0,
        description="Payload bytes per second one device may send (burst 10x), as IOT_DEVICE_MAX_MSGS_PER_S "
        "(0: no limit).",
    )

    # --- listener ------------------------------------------------------------------------------------
    listener_client_id: str = Field(
        "iot-etl-listener", description="Client id; the broker keeps this session while the listener is down."
    )
    listener_topics: Annotated[list[str], NoDecode] = Field(
        list(DEFAULT_TOPICS), description="Topic filters (JSON list or comma-separated)."
    )
    listener_group: str = Field(
        "",
        pattern=NAME_PATTERN,
        description="MQTT shared-subscription group of the listener replicas: each topic filter is "
        "subscribed as `$share/<group>/<filter>` and the broker hands each message to one member (empty: "
        "plain subscriptions, for one listener).",
    )
    listener_replica: str = Field(
        "",
        pattern=NAME_PATTERN,
        description="This listener's replica name, appended to the client id (`<IOT_LISTENER_CLIENT_ID>-"
        "<replica>`): each replica keeps its own persistent session, which holds its share of the messages "
        "while it is down (empty: the client id alone).",
    )
    listener_replicas: int = Field(
        1,
        ge=1,
        le=64,
        description="How many listeners `iot-etl up` runs (replicas 0..N-1, /metrics on consecutive ports "
        "from IOT_LISTENER_METRICS_PORT); more than one needs IOT_LISTENER_GROUP.",
    )
    listener_qos: int = Field(1, ge=0, le=2, description="Subscription QoS.")
    listener_session_expiry_s: int = Field(
        7 * 24 * 3600, ge=0, description="How long the broker keeps the listener's session and queue."
    )
    listener_receive_maximum: int = Field(
        1000, ge=1, le=65535, description="MQTT v5 receive-maximum: unacknowledged QoS>0 messages in flight."
    )
    listener_flush_count: int = Field(500, ge=1, description="Flush the XADD pipeline at this many entries.")
    listener_flush_ms: int = Field(50, ge=1, description="...or when the oldest buffered entry is this old.")
    listener_metrics_port: int = Field(9108, ge=0, description="Prometheus /metrics port (0: off).")
    listener_metrics_host: str = Field(
        "127.0.0.1", description="Address the /metrics endpoint binds (0.0.0.0 for a remote Prometheus)."
    )

    # --- micro-batches -------------------------------------------------------------------------------
    window_seconds: int = Field(60, ge=5, le=3600, description="Micro-window length; must divide 3600.")
    window_grace_ms: int = Field(
        2000, ge=0, description="How long past a window's end (Redis clock) before it counts as closed."
    )
    decode_page_rows: int = Field(
        50_000,
        ge=1000,
        description="A window is decoded and stored this many raw messages at a time, each page committed "
        "once stored, so a run's memory is bounded by the page, not the window, and a window's first "
        "messages are queryable before its last are decoded.",
    )
    sensor_interval_s: int = Field(5, ge=1, description="How often the sensor looks for closed windows.")
    sensor_lead_ms: int = Field(
        20_000,
        ge=0,
        le=1_800_000,
        description="Request a window's run this long before it closes (at most half a window is used); "
        "the run lands what has closed while it waits, so little is left to land at the close.",
    )
    sensor_max_runs_per_tick: int = Field(60, ge=1, description="Upper bound of run requests per tick.")
    redelivery_horizon_s: int = Field(
        900,
        ge=0,
        description="A message the broker sent again (MQTT DUP, after a broker restart or a listener "
        "reconnect) is a duplicate of an identical message of the same device that arrived at most this "
        "long before it (a plain reading without a device time would otherwise be stored twice); 0: off.",
    )
    sensor_heal_after_s: int = Field(
        900,
        ge=10,
        description="A closed window with entries that is not archived and decoded this long after it closed "
        "is run again by the sensor (after failed retries, a dead run or an outage).",
    )
    sensor_heal_lookback_hours: int = Field(
        24, ge=1, le=24 * 30, description="How far back the sensor looks for windows to run again."
    )
    sensor_skip_empty_windows: bool = Field(
        True, description="Skip runs for empty windows (the window that closes an hour always runs)."
    )
    device_timezone: str = Field("UTC", description="Zone of naive device timestamps.")
    device_ts_max_future_s: int = Field(
        300,
        ge=0,
        le=86_400,
        description="A device timestamp further ahead of arrival is not sane: arrival is used "
        "(at most a day).",
    )
    device_ts_min_year: int = Field(2000, description="A device timestamp before this year is not sane.")
    max_payload_bytes: int = Field(
        256 * 1024, ge=1, description="A larger payload is rejected (`payload_too_large`) without decoding."
    )
    max_field_chars: int = Field(
        256,
        ge=1,
        description="Longest stored text field (device id, metric, unit, text value, event id/type, door "
        "name); longer is rejected (`field_too_large`).",
    )
    max_meta_bytes: int = Field(
        16 * 1024, ge=2, description="Largest event `meta` as JSON; larger is rejected (`field_too_large`)."
    )
    ack_topic_template: str = Field("qs/v1/{device_id}/acks", description="Where event ACKs go.")
    deadletter_topic: str = Field("qs/v1/deadletter", description="Where rejected events go.")
    publisher_client_id: str = Field(
        "iot-etl-dagster", description="Client id prefix of Dagster's publisher."
    )

    # --- data quality checks -------------------------------------------------------------------------
    quality_reject_warn_share: float = Field(
        0.10,
        ge=0,
        le=1,
        description="schema_pass_rate warns above this share of an hour's messages rejected.",
    )
    quality_reject_error_share: float = Field(
        0.30, ge=0, le=1, description="schema_pass_rate fails (ERROR) above this share rejected."
    )
    quality_duplicate_warn_share: float = Field(
        0.05, ge=0, le=1, description="duplicates warns above this share of an hour's messages redelivered."
    )
    quality_duplicate_error_share: float = Field(
        0.25, ge=0, le=1, description="duplicates fails (ERROR) above this share redelivered."
    )
    quality_implausible_error_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="plausibility warns on any reading outside its metric's range, ERROR above this share.",
    )
    quality_silent_after_s: int = Field(
        900, ge=1, description="A device that has sent before and nothing for this long is silent."
    )
    freshness_deadline_cron: str = Field(
        "15 * * * *",
        description="Dagster's `freshness_check` on telemetry fails when the hour a tick of this cron (UTC) "
        "falls in has not been materialized by then (no micro-batch of that hour has run): hourly at :15.",
    )

    # --- Dagster -------------------------------------------------------------------------------------
    dagster_home: Path = Field(Path(".iot-etl/dagster_home"), description="Dagster instance directory.")
    dagster_pg_url: SecretStr | None = Field(
        None, description="PostgreSQL URL for Dagster's own storage (default: SQLite in dagster_home)."
    )
    dagster_run_launcher: Literal["forking", "default"] = Field(
        "forking",
        description="How run workers start: `forking` forks each from a process with Dagster and the "
        "libraries imported once (about a second of CPU less per run); `default` is Dagster's own launcher, "
        "a fresh interpreter per run started by the code server.",
    )
    run_workers_start: Literal["first_run", "daemon_start"] = Field(
        "first_run",
        description="When the `forking` launcher starts the process run workers are forked from (about "
        "200 MB with the resource tracker): `first_run` when the first run is launched, which then waits "
        "for its imports (a CPU-second on a quiet machine, more under load), so that a stack that has run "
        "nothing holds none; `daemon_start` as the daemon starts, so that no run waits.",
    )
    max_concurrent_runs: int = Field(
        2,
        ge=1,
        description="Runs Dagster's queue lets run at once (micro-batches, backfills, compaction).",
    )
    runs_per_shard: int = Field(
        1,
        ge=1,
        description="With IOT_STREAM_SHARDS > 1, runs of one shard that the queue lets run at once "
        "(each shard's windows are processed by runs of their own, in parallel with the other shards').",
    )
    webserver_host: str = Field("127.0.0.1", description="Dagster UI bind address.")
    webserver_port: int = Field(3000, description="Dagster UI port.")
    webserver_auth_proxy: str | None = Field(
        None,
        description="The authenticating proxy in front of the Dagster UI (which has no login of its own); "
        "`up` binds the UI to a non-loopback IOT_WEBSERVER_HOST only when this names it.",
    )

    partitions_start: str | None = Field(
        None,
        pattern=r"^\d{4}-\d{2}-\d{2}-\d{2}:00$",
        description="First hour partition (UTC, `YYYY-MM-DD-HH:00`); default: the installation's start, "
        "recorded by `db migrate` (the hour of its first message), or 2026-11-01-00:00 while the database "
        "cannot be read when the definitions load. Set an earlier hour to import older data.",
    )

    # what every value is checked for, and how a topic list is read: iot_core.settings_validation
    _split_topics = field_validator("listener_topics", mode="before")(split_topics)
    _refuse_line_breaks = model_validator(mode="after")(refuse_line_breaks)
    _check_replicas = model_validator(mode="after")(check_replicas)

    @model_validator(mode="after")
    def _check_window(self) -> Settings:
        if 3600 % self.window_seconds:
            raise ValueError(
                f"IOT_WINDOW_SECONDS={self.window_seconds} must divide 3600 (windows tile hours)"
            )
        return self

    @property
    def listener_session_id(self) -> str:
        """The listener's MQTT client id: IOT_LISTENER_CLIENT_ID, with `-<replica>` for a replica."""
        replica = self.listener_replica
        return f"{self.listener_client_id}-{replica}" if replica else self.listener_client_id

    @property
    def listener_filters(self) -> list[str]:
        """The topic filters the listener subscribes to: behind `$share/<group>/` with a group."""
        group = self.listener_group
        return [f"{SHARE_PREFIX}{group}/{t}" if group else t for t in self.listener_topics]

    @property
    def window_ms(self) -> int:
        return self.window_seconds * 1000

    @property
    def owner_url(self) -> SecretStr:
        """The schema owner's database URL (the writer's when no owner is set)."""
        return self.database_owner_url or self.database_url

    @property
    def redis_cluster(self) -> bool:
        return self.redis_mode == "cluster"

    @property
    def wait_replicas(self) -> int:
        """Replicas the listener's `WAIT` asks for (the setting, else 1 in cluster mode, 0 standalone)."""
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.redis_cluster else 0

    @property
    def listener_redis(self) -> SecretStr:
        """The listener's Redis URL (the pipeline's when none of its own is set)."""
        return self.listener_redis_url or self.redis_url

    def database_name(self) -> str:
        return self.database_url.get_secret_value().rsplit("/", 1)[-1].split("?", 1)[0]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
