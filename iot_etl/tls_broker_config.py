"""The Mosquitto 2 configuration of the broker of devices with certificates (`IOT_SECURITY`).

A device listener and a service listener, each with its own CA, the CRL and its own ACL file
(`iot_etl.broker_acl`); no plaintext listener and no anonymous client. Queues, persistence and logging
are those of the trusted-network broker (`iot_etl.broker_config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from iot_etl.broker_acl import (
    DEVICE_TOPIC_FILTERS,
    ack_topics,
    checked_deadletter_topic,
    device_acl,
    service_acl,
)
from iot_etl.broker_config import AUTOSAVE, LOG_LINES, Autosave, persistence_lines, queue_lines
from iot_etl.broker_values import ConfigValueError, config_path, config_port, config_value

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
    config_port("the device listener port (IOT_MQTT_TLS_PORT)", device_port)
    config_port("the service listener port (IOT_MQTT_SERVICE_PORT)", service_port)
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
    deadletter = checked_deadletter_topic(deadletter_topic, (*DEVICE_TOPIC_FILTERS, ack_filter))
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
        *queue_lines(max_queued_bytes),
        *persistence_lines(persistence_dir, autosave),
        *LOG_LINES,
    ]
    return TlsBrokerConfig(
        conf="\n".join(lines),
        acl_devices=device_acl(ack_pattern),
        acl_services=service_acl(services, ack_filter, deadletter),
    )
