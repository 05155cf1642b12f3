"""The configuration reference, docs/configuration.md, rendered from `iot_core.settings.Settings`.

Every row is a field of the settings object: its variable (`IOT_<FIELD>`), its default and its description,
grouped under the section comments (`# --- storage ---`) of settings.py and of the settings class it
extends. Only the class's defaults are read, never the environment, so the page is the same on every
machine; secret settings show their default with any password replaced by `***`.
`python -m iot_etl.config_reference > docs/configuration.md` writes it, and a test fails when the file
differs from `render()`.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from iot_core.redact import MASK, redact_url
from iot_core.settings import Settings
from iot_core.settings_secrets import SECRET_FIELDS

#: A section comment of settings.py: `    # --- storage -----...`.
_SECTION = re.compile(r"^\s*# -+ (?P<title>.+?) -+\s*$")
#: A field of the settings class: `    database_url: SecretStr = Field(`.
_FIELD = re.compile(r"^    (?P<name>[a-z][a-z0-9_]*)\s*:")

_HEADER = """\
# Configuration reference

<!-- Generated from iot_core/settings.py by `python -m iot_etl.config_reference > docs/configuration.md`.
     Edit the descriptions there, not here: tests/project/test_project_files.py fails when this file is
     stale. -->

Every setting is an environment variable `IOT_<NAME>`; a `.env` file in the working directory works too,
and the environment wins over it. The defaults work against PostgreSQL, Redis and Mosquitto on localhost.
Lists take JSON (`["a","b"]`) or comma-separated values; booleans take `true`/`false`. A value with a line
break is refused (settings are written into generated configuration files). Passwords belong in the URLs'
user part (`postgresql://user:PASSWORD@host/db`) or `IOT_MQTT_PASSWORD`; they are never shown (`***`).
"""


def sections(settings_class: type[Settings] = Settings) -> list[tuple[str, list[str]]]:
    """The class's fields in source order, grouped under its section comments (a field before the first
    comment falls under "General")."""
    groups: list[tuple[str, list[str]]] = [("General", [])]
    fields = settings_class.model_fields
    for line in _declarations(settings_class):
        if section := _SECTION.match(line):
            title = section["title"]
            groups.append((title[0].upper() + title[1:], []))
        elif (field := _FIELD.match(line)) and field["name"] in fields:
            groups[-1][1].append(field["name"])
    listed = {name for _, names in groups for name in names}
    missing = [name for name in fields if name not in listed]
    if missing:  # a field declared in a way the source scan does not recognise
        groups.append(("Other", missing))
    return [(title, names) for title, names in groups if names]


def _declarations(settings_class: type) -> Iterator[str]:
    """The source lines of the class and of the settings classes it extends (the class's own first)."""
    for cls in settings_class.__mro__:
        if cls.__module__.startswith("iot_core."):
            yield from inspect.getsource(cls).splitlines()


def shown_default(name: str, field: FieldInfo) -> str:
    """A field's default as a user would write it in the environment, with no password in it."""
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "(none)"
    if isinstance(default, SecretStr) or name in SECRET_FIELDS:
        text = default.get_secret_value() if isinstance(default, SecretStr) else str(default)
        return redact_url(text) if "://" in text else MASK
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, list | tuple):
        return ",".join(str(item) for item in default)
    return str(default)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rows(names: list[str], fields: dict[str, FieldInfo]) -> Iterator[str]:
    yield "| Variable | Default | Meaning |"
    yield "|---|---|---|"
    for name in names:
        field = fields[name]
        default = _cell(shown_default(name, field))
        yield f"| `IOT_{name.upper()}` | `{default}` | {_cell(field.description or '')} |"


def render(settings_class: type[Settings] = Settings) -> str:
    """The whole text of docs/configuration.md."""
    fields = settings_class.model_fields
    parts = [_HEADER]
    for title, names in sections(settings_class):
        parts.append(f"## {title}\n\n" + "\n".join(_rows(names, fields)) + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Print the reference, or with `--write PATH` write it there."""
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if args[:1] == ["--write"] and len(args) == 2:
        Path(args[1]).write_text(text, encoding="utf-8")
    elif not args:
        sys.stdout.write(text)
    else:
        sys.stderr.write("usage: python -m iot_etl.config_reference [--write docs/configuration.md]\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
