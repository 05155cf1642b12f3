"""The project's own Mosquitto 2 configuration.

Why generate it instead of using the distribution's default: Mosquitto's default
`max_queued_messages 1000` silently drops QoS 1/2 messages for a subscriber that is slow or stopped
(measured here: 40-68 % of a burst lost while the listener was down). That breaks the pipeline's
at-least-once guarantee without any error anywhere. So the generated configuration

- lifts the per-client message-count limit (`max_queued_messages 0`) and bounds the queue by bytes
  instead (`max_queued_bytes`), so a lagging listener's persistent session holds everything up to a
  known memory budget;
- keeps sessions and their queues on disk (`persistence`) so a broker restart does not lose them,
  and saves them every second (`autosave_interval`), so a broker crash loses at most about the last
  second of acknowledged messages;
- expires abandoned persistent sessions after a while (`persistent_client_expiration`);
- publishes `$SYS` every few seconds so `$SYS/broker/publish/messages/dropped` (the one counter that
  reveals a dropped message) can be watched by the status command.

`render_broker_config` is the broker of a trusted network (anonymous clients, one plaintext listener);
`iot_etl.tls_broker_config` the broker of devices with certificates, which shares the queue, persistence
and log lines of this one. Every value written passes `iot_etl.broker_values.config_value`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iot_etl.broker_values import ConfigValueError, config_path, config_port, config_value

#: Outgoing QoS 1/2 messages in flight per client. MQTT v5 clients (the listener) override it with
#: their own Receive Maximum; v3 clients get this. 20 (the default) throttles a busy subscriber.
MAX_INFLIGHT_MESSAGES = 100
#: How long the broker keeps a persistent session (and its queue) of a client that does not come back.
PERSISTENT_CLIENT_EXPIRATION = "7d"
#: How often `$SYS` topics (including the dropped-messages counter) are refreshed, in seconds.
SYS_INTERVAL_S = 5


@dataclass(frozen=True)
class Autosave:
    """When Mosquitto writes its in-memory state (sessions, subscriptions, queued messages) to disk.

    Mosquitto's persistence is a snapshot of the whole database, written at clean shutdown and by
    this rule, not a journal: a crash (SIGKILL, power loss) loses every queued message the broker
    acknowledged to its publisher after the last snapshot. `on_changes` False: a snapshot every
    `interval` seconds. `on_changes` True: a snapshot once `interval` changes (messages queued or
    delivered, subscriptions, persistent connects) have accumulated, checked once per pass of the
    broker's event loop.
    """

    interval: int
    on_changes: bool = False

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError("autosave interval must be >= 1 (0 would turn autosave off)")


#: The generated configuration's choice, by measurement (docs/guarantees.md, broker crash): a
#: snapshot every second bounds a crash's loss to about one second of acknowledged messages, while the
#: cost of a snapshot (the whole queue is rewritten) is paid at most once a second, however fast
#: messages arrive. Saving on every change loses at most one message but rewrites the whole queue for
#: each message, which makes a backlog's cost grow with the square of its length. Mosquitto's default
#: (1800 s) loses up to half an hour.
AUTOSAVE = Autosave(interval=1, on_changes=False)

#: The first line `iot-etl broker-config` prints without `--tls`.
TRUSTED_NETWORK_ONLY = (
    "# FOR A TRUSTED NETWORK ONLY: any client that reaches this broker may publish and read every topic "
    "without a certificate; devices need `iot-etl broker-config --tls`."
)


def queue_lines(max_queued_bytes: int) -> list[str]:
    """Queue bounds and `$SYS` lines, the same on either broker."""
    if max_queued_bytes < 0:
        raise ConfigValueError("max_queued_bytes must be >= 0")
    return [
        "# Queues: never drop on a message count (the default of 1000 silently loses QoS 1 messages",
        "# of a lagging subscriber); bound each client's queue by bytes instead.",
        "max_queued_messages 0",
        f"max_queued_bytes {max_queued_bytes}",
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        "queue_qos0_messages false",
        f"persistent_client_expiration {PERSISTENT_CLIENT_EXPIRATION}",
        "",
        "# $SYS/broker/publish/messages/dropped is how lost messages become visible.",
        f"sys_interval {SYS_INTERVAL_S}",
        "",
    ]


def persistence_lines(persistence_dir: Path | None, autosave: Autosave) -> list[str]:
    """Persistence lines, the same on either broker (None: no persistence)."""
    if persistence_dir is None:
        return ["persistence false"]
    return [
        "persistence true",
        f"persistence_location {config_path('the persistence directory', persistence_dir)}",
        "persistence_file mosquitto.db",
        f"autosave_interval {autosave.interval}",
        f"autosave_on_changes {'true' if autosave.on_changes else 'false'}",
    ]


#: The log lines, the same on either broker.
LOG_LINES = [
    "",
    "log_dest stderr",
    "log_type error",
    "log_type warning",
    "log_type notice",
    "log_type information",
    "connection_messages true",
    "log_timestamp true",
    "",
]


def render_broker_config(
    *,
    port: int,
    bind: str,
    persistence_dir: Path | None,
    max_queued_bytes: int,
    autosave: Autosave = AUTOSAVE,
) -> str:
    """The text of a `mosquitto.conf` for the pipeline's broker on a trusted network.

    `persistence_dir` None turns persistence off (sessions then live only as long as the process);
    `max_queued_bytes` bounds each client's queue (0 means unbounded, which is not recommended);
    `autosave` says how often the state is saved while the broker runs.
    No authentication: the listener allows anonymous clients (`render_tls_broker_config` is the secure one).
    A value that cannot be written as one configuration value raises `ConfigValueError` (a ValueError).
    """
    lines = [
        "# Generated by iot_etl.broker_config: Mosquitto 2 configuration of the telemetry pipeline.",
        "# Do not edit by hand; change the settings and regenerate.",
        "per_listener_settings false",
        f"listener {config_port('port', port)} {config_value('the listener address', bind)}",
        "allow_anonymous true",
        "",
        *queue_lines(max_queued_bytes),
        *persistence_lines(persistence_dir, autosave),
        *LOG_LINES,
    ]
    return "\n".join(lines)
