"""Where and how a service connects to the broker: host, port, credentials and TLS files, from the settings.

With `IOT_SECURITY` on, a service connects to the service listener with its role's certificate; off, to the
plain address of the settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iot_core.pki_layout import SERVICE_ROLES, PkiLayout
from iot_core.settings import Settings


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

    @classmethod
    def for_role(cls, settings: Settings, role: str) -> MqttEndpoint:
        """Where and how a service of `role` (listener, publisher, simulator, ops) connects.

        With `IOT_SECURITY` on: the service listener (`IOT_MQTT_SERVICE_HOST:IOT_MQTT_SERVICE_PORT`),
        trusting the PKI's `ca-chain.pem`, with the role's service certificate `services/<role>.pem`;
        `IOT_MQTT_TLS_CA` and `IOT_MQTT_TLS_CERT`/`IOT_MQTT_TLS_KEY` (a pair) win when set. Off: the
        plain settings (`from_settings`).
        """
        if role not in SERVICE_ROLES:
            raise ValueError(f"MQTT role {role!r} is not one of {', '.join(SERVICE_ROLES)}")
        plain = cls.from_settings(settings)
        if not settings.security:
            return plain
        layout = PkiLayout(settings.pki_dir)
        cert, key = layout.service(role)
        if settings.mqtt_tls_cert is not None:
            cert, key = settings.mqtt_tls_cert, settings.mqtt_tls_key  # no key: the key is in the cert file
        return cls(
            host=settings.mqtt_service_host,
            port=settings.mqtt_service_port,
            username=plain.username,
            password=plain.password,
            tls_ca=settings.mqtt_tls_ca or layout.ca_chain,
            tls_cert=cert,
            tls_key=key,
            keepalive_s=plain.keepalive_s,
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
