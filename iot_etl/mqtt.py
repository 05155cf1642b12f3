"""One way to build a paho-mqtt 2 client (MQTT v5, TLS and credentials from settings) for every part."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from iot_etl.settings import Settings


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    keepalive_s: int = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> MqttEndpoint:
        return cls(
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            username=settings.mqtt_username,
            password=settings.mqtt_password.get_secret_value() if settings.mqtt_password else None,
            tls_ca=settings.mqtt_tls_ca,
            tls_cert=settings.mqtt_tls_cert,
            tls_key=settings.mqtt_tls_key,
            keepalive_s=settings.mqtt_keepalive_s,
        )


def new_client(endpoint: MqttEndpoint, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    """A configured, not yet connected MQTT v5 client."""
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls_ca:
        client.tls_set(
            ca_certs=str(endpoint.tls_ca),
            certfile=str(endpoint.tls_cert) if endpoint.tls_cert else None,
            keyfile=str(endpoint.tls_key) if endpoint.tls_key else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    return client
