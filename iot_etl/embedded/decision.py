"""Whether `up` may start a service itself, by `IOT_EMBEDDED_SERVICES`.

`auto` starts one only where the address is the default one (the setting's default value) and nothing
answers there; `always` at any local address that does not answer; `never` not at all.
"""

from __future__ import annotations

from pydantic import SecretStr

from iot_core.settings import Settings

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _is_default(settings: Settings, *names: str) -> bool:
    def plain(value: object) -> object:
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    return all(plain(getattr(settings, n)) == plain(Settings.model_fields[n].default) for n in names)


def should_embed(settings: Settings, field_name: str, host: str) -> bool:
    """Whether `up` may start this service itself (when nothing answers at its address)."""
    mode = settings.embedded_services
    if mode == "never" or host not in LOCAL_HOSTS:
        return False
    return mode == "always" or _is_default(settings, field_name)


def should_embed_broker(settings: Settings) -> bool:
    """As `should_embed`, for the MQTT address (host and port) without TLS (the project's broker has none)."""
    mode = settings.embedded_services
    if mode == "never" or settings.mqtt_host not in LOCAL_HOSTS or settings.mqtt_tls_ca is not None:
        return False
    return mode == "always" or _is_default(settings, "mqtt_host", "mqtt_port")


def should_embed_secure_broker(settings: Settings) -> bool:
    """As `should_embed_broker`, for the service listener's address (IOT_SECURITY)."""
    mode = settings.embedded_services
    if mode == "never" or settings.mqtt_service_host not in LOCAL_HOSTS:
        return False
    return mode == "always" or _is_default(settings, "mqtt_service_host", "mqtt_service_port")
