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
`render_tls_broker_config` the broker of devices with certificates (issue 24): a device listener and a
service listener, each with its own CA, CRL and ACL file. Every value written into a configuration file
passes `config_value`, which refuses what could end a line (a newline in a host or path once added
`allow_anonymous true` to the generated file).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from iot_core.device_ids import validate_name
from iot_core.pki_layout import SERVICE_ROLES as PKI_SERVICE_ROLES
from iot_core.pki_layout import service_cn
from iot_core.settings import DEFAULT_TOPICS

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

#: What a PUBLISH packet holds besides its payload, so that `max_packet_size` admits every payload of
#: IOT_MAX_PAYLOAD_BYTES: fixed header (<= 5 bytes), topic length and topic (2 + 1,024: the listener counts a
#: longer topic as excess anyway), packet id (2), properties length and MQTT v5 properties (<= 4 + the rest,
#: about 3 KiB for content type, expiry, user properties; the product's devices send none). A packet larger
#: than payload limit + this margin is refused by the broker (the client is disconnected) before anything
#: downstream sees it; a payload between the limit and the packet size reaches the listener, whose decoder
#: rejects it (`payload_too_large`).
PACKET_OVERHEAD_BYTES = 4096
#: MQTT's largest packet (the remaining length field's maximum).
MQTT_MAX_PACKET_SIZE = 268_435_455

#: What a device may publish: only under its own id (the certificate's CN, which is the broker username),
#: in the three formats of iot_core.formats.topics: plain `devices/ID/metric`, events `qs/v1/ID/events`,
#: F2 `stat|tele/f2-MAC/...`.
DEVICE_WRITE_PATTERNS = ("devices/%u/+", "qs/v1/%u/events", "stat/%u/#", "tele/%u/#")
#: Every device topic (what the listener reads and the simulator writes).
DEVICE_TOPIC_FILTERS = DEFAULT_TOPICS
#: Service roles (the OU of a service certificate) and what each may do besides nothing.
SERVICE_ROLES = PKI_SERVICE_ROLES

_DEVICE_ID = "{device_id}"


class ConfigValueError(ValueError):
    """A value cannot be written into a broker configuration file (the message names it)."""


def config_value(what: str, value: str, *, spaces: bool = False) -> str:
    """`value` when it can be written as one value of one line of a configuration file.

    Refused: empty, a line break, NUL or any other control character (each would end the line and let the
    rest become directives of the attacker's choosing), leading or trailing blanks (Mosquitto trims them),
    and, unless `spaces`, any blank at all (hosts, names and topics are single tokens).
    """
    if not value:
        raise ConfigValueError(f"{what} is empty")
    if any(not c.isprintable() for c in value):
        raise ConfigValueError(
            f"{what} {value!r} holds a line break or control character, which would add lines to the "
            "broker configuration: remove it"
        )
    if value != value.strip() or (not spaces and any(c.isspace() for c in value)):
        raise ConfigValueError(f"{what} {value!r} holds blanks: remove them")
    return value


def config_path(what: str, path: Path) -> str:
    """The text of `path` as written into a configuration file (see `config_value`)."""
    return config_value(what, str(path), spaces=True)


def _port(what: str, port: int) -> int:
    if not 0 < port < 65536:
        raise ConfigValueError(f"{what} {port} is not a TCP port")
    return port


def _queue_lines(max_queued_bytes: int) -> list[str]:
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


def _persistence_lines(persistence_dir: Path | None, autosave: Autosave) -> list[str]:
    if persistence_dir is None:
        return ["persistence false"]
    return [
        "persistence true",
        f"persistence_location {config_path('the persistence directory', persistence_dir)}",
        "persistence_file mosquitto.db",
        f"autosave_interval {autosave.interval}",
        f"autosave_on_changes {'true' if autosave.on_changes else 'false'}",
    ]


_LOG_LINES = [
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
        f"listener {_port('port', port)} {config_value('the listener address', bind)}",
        "allow_anonymous true",
        "",
        *_queue_lines(max_queued_bytes),
        *_persistence_lines(persistence_dir, autosave),
        *_LOG_LINES,
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class TlsFiles:
    """The files a TLS broker reads, as named in its configuration."""

    device_ca: Path
    service_ca: Path
    server_cert: Path
    server_key: Path
    crl: Path
    acl_devices: Path
    acl_services: Path

    @classmethod
    def in_dir(cls, directory: Path) -> TlsFiles:
        """The layout of `iot-etl broker-config --tls --out DIR`: everything the broker reads, in DIR."""
        return cls(
            device_ca=directory / "device-ca.pem",
            service_ca=directory / "service-ca.pem",
            server_cert=directory / "server.pem",
            server_key=directory / "server.key",
            crl=directory / "crl.pem",
            acl_devices=directory / "acl-devices",
            acl_services=directory / "acl-services",
        )


@dataclass(frozen=True)
class TlsBrokerConfig:
    """The texts of a TLS broker's files: `mosquitto.conf` and its two ACL files."""

    conf: str
    acl_devices: str
    acl_services: str


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether the MQTT topic filter (with `+` and `#`) matches `topic`."""
    levels = topic.split("/")
    for i, part in enumerate(topic_filter.split("/")):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(topic_filter.split("/")) == len(levels)


def ack_topics(ack_topic_template: str) -> tuple[str, str]:
    """(the ACL pattern of one device's ACK topic, the filter of every device's ACK topic) of the template
    (e.g. `qs/v1/{device_id}/acks` -> `qs/v1/%u/acks`, `qs/v1/+/acks`)."""
    config_value("the ACK topic template (IOT_ACK_TOPIC_TEMPLATE)", ack_topic_template)
    levels = ack_topic_template.split("/")
    rest = [level for level in levels if level != _DEVICE_ID]
    if len(levels) - len(rest) != 1 or any(c in level for level in rest for c in "{}+#%") or "" in rest:
        raise ConfigValueError(
            f"IOT_ACK_TOPIC_TEMPLATE {ack_topic_template!r} must hold {_DEVICE_ID} as one whole topic level "
            "and no other braces, wildcards (+ #), % or empty levels"
        )
    return (
        "/".join("%u" if level == _DEVICE_ID else level for level in levels),
        "/".join("+" if level == _DEVICE_ID else level for level in levels),
    )


def _deadletter(topic: str, device_filters: tuple[str, ...]) -> str:
    config_value("the dead-letter topic (IOT_DEADLETTER_TOPIC)", topic)
    if any(c in topic for c in "+#%") or "" in topic.split("/"):
        raise ConfigValueError(
            f"IOT_DEADLETTER_TOPIC {topic!r} must be a topic name (no + # %, no empty level)"
        )
    clash = next((f for f in device_filters if topic_matches(f, topic)), None)
    if clash is not None:
        raise ConfigValueError(
            f"IOT_DEADLETTER_TOPIC {topic!r} lies under {clash!r}, where devices publish or read: choose "
            "another topic"
        )
    return topic


def _device_acl(ack_pattern: str) -> str:
    lines = [
        "# Generated by iot_etl.broker_config. The device listener's ACL: the username is the certificate's",
        "# CN (the device id, %u). A device publishes only under its own id and reads only its own ACKs;",
        "# everything else (other devices' topics, dead letters, $SYS) is neither writable nor delivered.",
        *(f"pattern write {pattern}" for pattern in DEVICE_WRITE_PATTERNS),
        f"pattern read {ack_pattern}",
        "",
    ]
    return "\n".join(lines)


def service_rules(role: str, *, ack_filter: str, deadletter_topic: str) -> tuple[tuple[str, str], ...]:
    """(access, topic filter) pairs a service of `role` is granted on the service listener."""
    rules: dict[str, tuple[tuple[str, str], ...]] = {
        "listener": tuple(("read", f) for f in DEVICE_TOPIC_FILTERS),
        "publisher": (("write", ack_filter), ("write", deadletter_topic)),
        "simulator": tuple(("write", f) for f in DEVICE_TOPIC_FILTERS),
        "ops": (("read", deadletter_topic), ("read", "$SYS/#")),
    }
    if role not in rules:
        raise ConfigValueError(f"service role {role!r} is not one of {', '.join(SERVICE_ROLES)}")
    return rules[role]


def _service_acl(services: Mapping[str, str], ack_filter: str, deadletter_topic: str) -> str:
    lines = [
        "# Generated by iot_etl.broker_config. The service listener's ACL: one block per service certificate",
        "# (username = its CN, iot-etl-<name>); a name without a block may do nothing.",
    ]
    for name, role in sorted(services.items()):
        try:
            validate_name(name, "service name")
        except ValueError as exc:
            raise ConfigValueError(str(exc)) from None
        user = config_value("the service name", service_cn(name))
        lines += ["", f"# role {role}", f"user {user}"]
        lines += [
            f"topic {access} {topic}"
            for access, topic in service_rules(role, ack_filter=ack_filter, deadletter_topic=deadletter_topic)
        ]
    lines.append("")
    return "\n".join(lines)


def _tls_listener_lines(
    title: str, port: int, bind: str, cafile: Path, files: TlsFiles, acl_file: Path, *, clientid: bool
) -> list[str]:
    return [
        title,
        f"listener {port} {bind}",
        f"cafile {config_path('the CA file', cafile)}",
        f"certfile {config_path('the server certificate', files.server_cert)}",
        f"keyfile {config_path('the server key', files.server_key)}",
        f"crlfile {config_path('the CRL file', files.crl)}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        *(["use_username_as_clientid true"] if clientid else []),
        "allow_anonymous false",
        f"acl_file {config_path('the ACL file', acl_file)}",
        "",
    ]


def render_tls_broker_config(
    *,
    device_port: int,
    device_bind: str,
    service_port: int,
    service_bind: str,
    files: TlsFiles,
    services: Mapping[str, str],
    persistence_dir: Path | None,
    max_queued_bytes: int,
    max_payload_bytes: int,
    ack_topic_template: str,
    deadletter_topic: str,
    autosave: Autosave = AUTOSAVE,
) -> TlsBrokerConfig:
    """The broker of devices with certificates: two mTLS listeners, no plaintext one, no anonymous client.

    - Device listener (`device_bind:device_port`): trusts the device CA only; the certificate's CN is the
      username and the client id (`use_username_as_clientid`: no device can take over another client's
      session, the listener's included); ACL patterns confine each device to its own topics.
    - Service listener (`service_bind:service_port`): trusts the service CA only, so a device certificate
      is refused there; the CN is the username but the client id is the client's own (the ACK publisher
      uses one per run); `services` (name -> role, from the PKI) gets one ACL block each.
    - Both load the CRL (an expired CRL refuses everyone: keep it fresh). Retained messages are refused
      (`retain_available false` disconnects a client publishing one) and a packet larger than the payload
      limit plus `PACKET_OVERHEAD_BYTES` disconnects its sender.
    Every value is checked by `config_value`; a bad one raises `ConfigValueError` naming it.
    """
    _port("the device listener port (IOT_MQTT_TLS_PORT)", device_port)
    _port("the service listener port (IOT_MQTT_SERVICE_PORT)", service_port)
    config_value("the device listener address", device_bind)
    config_value("the service listener address (IOT_MQTT_SERVICE_HOST)", service_bind)
    if device_port == service_port and device_bind == service_bind:
        raise ConfigValueError(
            f"the device and service listeners both use {device_bind}:{device_port}: "
            "set IOT_MQTT_TLS_PORT and IOT_MQTT_SERVICE_PORT apart"
        )
    if max_payload_bytes < 1 or max_payload_bytes + PACKET_OVERHEAD_BYTES > MQTT_MAX_PACKET_SIZE:
        raise ConfigValueError(
            f"IOT_MAX_PAYLOAD_BYTES {max_payload_bytes} is outside 1..{MQTT_MAX_PACKET_SIZE}"
        )
    ack_pattern, ack_filter = ack_topics(ack_topic_template)
    deadletter = _deadletter(deadletter_topic, (*DEVICE_TOPIC_FILTERS, ack_filter))
    lines = [
        "# Generated by iot_etl.broker_config: Mosquitto 2 configuration of the telemetry pipeline, with",
        "# device identity (mTLS). Do not edit by hand; change the settings and regenerate.",
        "# No plaintext listener, no anonymous client. ACLs: acl-devices, acl-services.",
        "per_listener_settings true",
        "",
        *_tls_listener_lines(
            "# Devices: device CA only; the certificate's CN is the username and the client id.",
            device_port,
            device_bind,
            files.device_ca,
            files,
            files.acl_devices,
            clientid=True,
        ),
        *_tls_listener_lines(
            "# Services (listener, ACK publisher, simulator, operators): service CA only.",
            service_port,
            service_bind,
            files.service_ca,
            files,
            files.acl_services,
            clientid=False,
        ),
        "# A packet larger than the payload limit plus room for topic and headers disconnects its sender.",
        f"max_packet_size {max_payload_bytes + PACKET_OVERHEAD_BYTES}",
        "# A retained message would be replayed to every later subscriber: publishing one disconnects.",
        "retain_available false",
        "",
        *_queue_lines(max_queued_bytes),
        *_persistence_lines(persistence_dir, autosave),
        *_LOG_LINES,
    ]
    return TlsBrokerConfig(
        conf="\n".join(lines),
        acl_devices=_device_acl(ack_pattern),
        acl_services=_service_acl(services, ack_filter, deadletter),
    )
