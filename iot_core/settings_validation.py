"""Checks the settings object applies to every value it reads, kept apart from its field list.

Settings end up in generated configuration files (the broker's, its ACL files, Redis's ACL file), where a
line break in a value would add lines of the attacker's choosing; so every value is refused that holds
one. Topic lists come from the environment as JSON or as comma-separated text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, TypeVar

from pydantic import BaseModel, SecretStr

#: MQTT's prefix of a shared subscription's topic filter.
SHARE_PREFIX = "$share/"

#: Characters no setting may hold.
FORBIDDEN_SETTING_CHARS = ("\n", "\r", "\x00")

_Model = TypeVar("_Model", bound=BaseModel)


def split_topics(value: object) -> object:
    """A topic list given as text: a JSON list, or comma-separated filters (blanks around each dropped)."""
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            return json.loads(value)
        return [t.strip() for t in value.split(",") if t.strip()]
    return value


def refuse_line_breaks(settings: _Model) -> _Model:
    """`settings` when no value (a list's items, a secret's plain value, a path) holds a line break or NUL."""
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        values = value if isinstance(value, list) else [value]
        for item in values:
            text = item.get_secret_value() if isinstance(item, SecretStr) else item
            if isinstance(text, str | Path) and any(c in str(text) for c in FORBIDDEN_SETTING_CHARS):
                raise ValueError(
                    f"IOT_{name.upper()} holds a line break or NUL character; settings are written into "
                    "configuration files, so remove it"
                )
    return settings


class _ListenerShare(Protocol):
    listener_group: str
    listener_topics: list[str]
    listener_replicas: int


_Share = TypeVar("_Share", bound=_ListenerShare)


def check_replicas(settings: _Share) -> _Share:
    """`settings` when the listener's shared-subscription settings fit together: the group is given once
    (not also inside the topic filters), and several replicas share a group (or each would write every
    message)."""
    group, topics, replicas = settings.listener_group, settings.listener_topics, settings.listener_replicas
    if group and any(t.startswith(SHARE_PREFIX) for t in topics):
        raise ValueError(
            "IOT_LISTENER_TOPICS holds $share/ filters and IOT_LISTENER_GROUP is set: give the plain "
            "filters and the group"
        )
    if replicas > 1 and not group:
        raise ValueError(
            f"IOT_LISTENER_REPLICAS={replicas} needs IOT_LISTENER_GROUP: without a shared subscription "
            "every listener would write every message"
        )
    return settings
