"""What PostgreSQL said when it answered a connection and refused it, and what to do: a server that refuses
a login, a role or database that does not exist, is not "unreachable" and starting it does not help.

The texts matched are the server's own (PostgreSQL 12-18, English messages), as psycopg quotes them after
`FATAL:`; anything else is None and the caller reports the server as unreachable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FATAL = re.compile(r"FATAL:\s+(?P<said>[^\n]+)")
#: (what the server says, which refusal it is, what to do: `{setting}` and the quoted `{name}` filled in)
_REFUSALS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (
        re.compile(r'(password|SCRAM|md5|peer|ident|cert) authentication failed for user "(?P<name>[^"]*)"'),
        "authentication",
        "check the user and password in {setting}",
    ),
    (
        re.compile(r"no password supplied"),
        "password",
        "the server asks for a password: put it in {setting}",
    ),
    (
        re.compile(r'role "(?P<name>[^"]*)" does not exist'),
        "role",
        "fix the user in {setting}, or create role {name} "
        "(`iot-etl db migrate` creates those of IOT_DATABASE_URL and IOT_DATABASE_READER_URL)",
    ),
    (
        re.compile(r'database "(?P<name>[^"]*)" does not exist'),
        "database",
        "create database {name} with `iot-etl db migrate`, or fix the name in {setting}",
    ),
    (
        re.compile(r'permission denied for database "(?P<name>[^"]*)"'),
        "privilege",
        "grant the user CONNECT on {name} (`iot-etl db migrate` does), or fix the user in {setting}",
    ),
    (
        re.compile(r"no pg_hba\.conf entry for"),
        "pg_hba",
        "allow this host and user in the server's pg_hba.conf, or fix {setting}",
    ),
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """PostgreSQL's answer (`said`, one line), what to do about it (`todo`), and which refusal it is
    (`kind`: authentication, password, role, database, privilege, pg_hba)."""

    said: str
    todo: str
    kind: str

    def __str__(self) -> str:
        return f"PostgreSQL refused the connection: {self.said}; {self.todo}"


def postgres_refusal(text: str, setting: str) -> Refusal | None:
    """The refusal in a driver's error text `text` (already free of passwords), with what to do about the
    URL in `setting` (e.g. IOT_DATABASE_URL); None when the server did not answer."""
    fatal = _FATAL.search(text)
    # the server's FATAL line, else libpq's own words after psycopg's "connection to server ... failed: "
    said = " ".join((fatal["said"] if fatal else text.split("\n")[0].rsplit("failed: ", 1)[-1]).split())
    for pattern, kind, todo in _REFUSALS:
        if found := pattern.search(said):
            name = found.groupdict().get("name") or ""
            return Refusal(said, todo.format(setting=setting, name=name), kind)
    return None
