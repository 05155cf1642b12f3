"""Values written into a broker configuration file, checked so that none can add a line.

Every value a generated configuration or ACL file holds passes `config_value`, which refuses what could end
a line (a newline in a host or path once added `allow_anonymous true` to the generated file).
"""

from __future__ import annotations

from pathlib import Path


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


def config_port(what: str, port: int) -> int:
    """`port` when it is a TCP port."""
    if not 0 < port < 65536:
        raise ConfigValueError(f"{what} {port} is not a TCP port")
    return port
