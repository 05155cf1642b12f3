"""Read compose.yaml the way `docker compose` does: YAML (with merge keys), then variable interpolation, and
an override file (`-f compose.yaml -f override.yaml`) merged onto it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
#: Runs in containers of their own: merged onto compose.yaml (`-f compose.yaml -f ...`).
DOCKER_LAUNCHER = ROOT / "deploy" / "compose.docker-launcher.yaml"
#: The passwords a user fills into .env (.env.example leaves them empty).
PASSWORDS = {
    "POSTGRES_PASSWORD": "pg-secret_1",
    "WRITER_DB_PASSWORD": "wr-secret_2",
    "GRAFANA_DB_PASSWORD": "gr-secret_3",
    "DAGSTER_DB_PASSWORD": "dg-secret_4",
    "REDIS_PIPELINE_PASSWORD": "rp-secret_5",
    "REDIS_LISTENER_PASSWORD": "rl-secret_6",
    "GRAFANA_ADMIN_PASSWORD": "ga-secret_7",
}

# $$ | $NAME | ${NAME} | ${NAME:-default} | ${NAME-default} | ${NAME:?error} | ${NAME?error}
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


class MissingVariable(KeyError):
    """A `${NAME:?message}` whose variable is unset or empty."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """One string with compose's interpolation applied."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["bare"]:
            return env.get(match["bare"], "")
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        value = env.get(name)
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-"):
            return arg if missing else str(value)
        if op in (":?", "?"):
            if missing:
                raise MissingVariable(f"{name}: {arg}")
            return str(value)
        return "" if value is None else value

    return _VARIABLE.sub(replace, text)


def variables(text: str) -> set[str]:
    """Names of the variables a file refers to (escaped `$$` excluded)."""
    return {m["bare"] or m["name"] for m in _VARIABLE.finditer(text) if not m["escaped"]}


def load(path: Path) -> dict[str, Any]:
    """The file as parsed YAML, strings not interpolated (what the JSON schema validates)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    """A parsed compose document with every string interpolated."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    return node


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of a .env file (comments and blank lines skipped; quotes around a value removed)."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]  # quoted: taken as is (a bcrypt hash holds `$`)
            out[key.strip()] = value
    return out


#: Service keys an override replaces (compose's merge rules); other mappings merge, sequences below merge.
_REPLACED = {"command", "entrypoint", "image", "user", "working_dir", "healthcheck"}


def _volume_target(volume: str) -> str:
    return volume.split(":")[1]


def merge_override(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` merged onto `base` as compose merges files: mappings key by key (`environment`,
    `depends_on` too), `volumes` of a service by target path, other sequences appended without duplicates,
    `command`, `entrypoint`, `image` and the like replaced."""

    def service(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        out = dict(old)
        for key, value in new.items():
            if key in _REPLACED or key not in old:
                out[key] = value
            elif key == "volumes":
                kept = [v for v in old[key] if _volume_target(v) not in {_volume_target(n) for n in value}]
                out[key] = kept + list(value)
            elif isinstance(value, dict):
                out[key] = {**old[key], **value}
            elif isinstance(value, list):
                out[key] = list(old[key]) + [v for v in value if v not in old[key]]
            else:
                out[key] = value
        return out

    merged = dict(base)
    for key, value in override.items():
        if key == "services":
            services = dict(base.get("services", {}))
            for name, definition in value.items():
                services[name] = service(services.get(name, {}), definition)
            merged[key] = services
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = {**base[key], **value}
        else:
            merged[key] = value
    return merged


def example_env() -> dict[str, str]:
    """.env.example with the passwords a user is asked to fill in (and the Docker socket's group)."""
    return {**read_env_file(ROOT / ".env.example"), **PASSWORDS, "DOCKER_GID": "998"}


def resolved(*overrides: Path) -> dict[str, Any]:
    """compose.yaml, with `overrides` merged onto it in order, interpolated with `example_env()`."""
    document = load(COMPOSE)
    for path in overrides:
        document = merge_override(document, load(path))
    return resolve(document, example_env())


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target -> source[:ro] of a service's volumes."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        out[target] = ":".join([source, *mode])
    return out


def user_of(url: str) -> str:
    return urlsplit(url).username or ""
