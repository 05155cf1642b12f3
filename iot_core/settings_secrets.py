"""Which settings are secrets, and how Dagster is handed them without seeing their values.

Dagster shows its resources' configuration in its UI; a secret must reach a resource as the name of an
environment variable (`EnvVar`), never as a value. `export_secrets` puts each secret Dagster's resources
read into this process's environment and says under which name.
"""

from __future__ import annotations

import hashlib
import os

from pydantic import SecretStr

from iot_core.settings import Settings

#: Settings that can hold a password (in a URL or on their own); kept as SecretStr, never logged or shown.
SECRET_FIELDS = (
    "database_url",
    "database_owner_url",
    "database_reader_url",
    "redis_url",
    "listener_redis_url",
    "dagster_pg_url",
    "mqtt_password",
)
#: The secrets Dagster's resources read (through environment variables: see `export_secrets`).
DAGSTER_SECRET_FIELDS = ("database_url", "database_owner_url", "redis_url", "dagster_pg_url", "mqtt_password")


def export_secrets(settings: Settings) -> dict[str, str]:
    """Put every set secret of `settings` into this process's environment and return field -> variable
    name, so that consumers that show their configuration (Dagster) can be handed the variable, not the
    value.

    A secret goes under its `IOT_*` name when that holds the same value already, or is unset and the
    value is the setting's default; any other value (one from a `.env` file, or a settings object built
    with explicit values) gets a variable of its own. Setting the plain name to anything else would be
    read by every later settings object of the process as its own value: a test's owner URL would
    become the next command's, two settings objects would read each other's secrets.
    Only what Dagster's resources read is exported (`DAGSTER_SECRET_FIELDS`).
    """
    names: dict[str, str] = {}
    for field in DAGSTER_SECRET_FIELDS:
        value = getattr(settings, field)
        if value is None:
            continue
        secret = value.get_secret_value()
        name = f"{settings.model_config['env_prefix']}{field.upper()}"
        default = type(settings).model_fields[field].default
        is_default = isinstance(default, SecretStr) and default.get_secret_value() == secret
        if os.environ.get(name) == secret or (name not in os.environ and is_default):
            os.environ[name] = secret
        else:
            name = f"{name}__{hashlib.sha256(secret.encode()).hexdigest()[:12]}"
            os.environ[name] = secret
        names[field] = name
    return names
