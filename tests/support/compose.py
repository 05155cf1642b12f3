"""Read compose.yaml the way `docker compose` does: YAML (with merge keys), then variable interpolation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

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
