"""The Redis ACL file of the product's two Redis users, rendered from the settings.

The listener (`IOT_LISTENER_REDIS_URL`) may only append to the raw streams; the pipeline (`IOT_REDIS_URL`:
micro-batches, the sensor, compaction, `iot-etl status`, `up`'s readiness check) may read, measure and trim
them. Both may connect (AUTH, HELLO, CLIENT SETNAME, PING) and nothing else; the default user is off.
The command lists are what the product sends (redis-py's CLIENT SETINFO on connect is refused and ignored:
Redis 7.0 has no `client|setinfo`, and an ACL file naming it does not load). In a Redis Cluster every node
loads the same file: each user also needs what the cluster client asks a node (`CLUSTER_COMMANDS`).

Passwords go into the file as SHA-256 hashes (`#<hex>`), never in plain text. Redis reads the file with
`sdssplitargs`, so a user name holding whitespace, a control character or a quote would change the rules
of its line: such names (and such passwords, for the same settings) are refused.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from redis.connection import parse_url

from iot_core.errors import UserFacingError
from iot_core.redis_client import split_nodes
from iot_core.settings import Settings
from iot_core.streams import stream_names

#: Every user may open a connection the way redis-py does and check it is alive.
CONNECT_COMMANDS = ("auth", "hello", "client|setname", "ping")
#: The listener's writer (`ingest_listener.stream_writer`): XADD without MAXLEN, nothing else.
LISTENER_COMMANDS = ("xadd",)
#: Micro-batches and the sensor (XRANGE, TIME), compaction (XTRIM, MEMORY USAGE), `status` (XLEN), compaction,
#: `status` and the `redis_memory` check (INFO memory: used memory and `maxmemory`).
PIPELINE_COMMANDS = ("xrange", "xlen", "xtrim", "memory|usage", "time", "info")
#: A cluster client (`IOT_REDIS_MODE=cluster`) reads the slot map (CLUSTER SLOTS) and the command table
#: (COMMAND, where it finds a command's keys) from a node when it is made and after a failover.
CLUSTER_COMMANDS = ("cluster|slots", "command")
#: The listener's confirmation by replicas before it acknowledges (`IOT_REDIS_WAIT_REPLICAS` > 0), and
#: whether a master has replicas at all (ROLE).
WAIT_COMMANDS = ("wait", "role")
LISTENER_SETTING = "IOT_LISTENER_REDIS_URL"
PIPELINE_SETTING = "IOT_REDIS_URL"
_GLOB_SPECIAL = "*?[]\\"


class RedisAclError(UserFacingError):
    """A setting the ACL file cannot be made from."""


@dataclass(frozen=True)
class Credentials:
    """Who a Redis URL logs in as."""

    setting: str
    user: str
    password: str
    db: int


@dataclass(frozen=True)
class RedisUser:
    """One `user` line: its name, password, the keys and commands it may use, the settings naming it."""

    name: str
    password: str
    keys: tuple[str, ...]
    commands: tuple[str, ...]
    settings: tuple[str, ...]

    def line(self) -> str:
        digest = hashlib.sha256(self.password.encode()).hexdigest()
        keys = " ".join(f"~{k}" for k in self.keys)
        commands = " ".join(f"+{c}" for c in self.commands)
        return f"user {self.name} on #{digest} resetkeys resetchannels {keys} -@all {commands}"


@dataclass(frozen=True)
class AclFile:
    """The rendered file and what a user should know about it (one line each, for stderr)."""

    users: tuple[RedisUser, ...]
    notes: tuple[str, ...]

    @property
    def text(self) -> str:
        lines = ["user default off resetpass resetkeys resetchannels -@all", *(u.line() for u in self.users)]
        return "\n".join(lines) + "\n"


def _unsafe(value: str) -> bool:
    return any(c.isspace() or unicodedata.category(c).startswith("C") for c in value)


def credentials(url: str, setting: str) -> Credentials:
    """The user and password `url` logs in with, as redis-py reads them (percent-decoded)."""
    try:
        parts = parse_url(split_nodes(url)[0])
    except ValueError:
        raise RedisAclError(
            f"{setting} is not a Redis URL", f"set {setting}=redis://USER:PASSWORD@host:port/0"
        ) from None
    user, password = parts.get("username"), parts.get("password")
    if not user or not password:
        raise RedisAclError(
            f"{setting} has no {'user name' if not user else 'password'}",
            f"Redis ACL users need {setting}=redis://USER:PASSWORD@host:port/0",
        )
    if _unsafe(user) or any(c in user for c in "\"'\\"):
        raise RedisAclError(
            f"the Redis user name of {setting} holds whitespace, a control character or a quote",
            "use letters, digits and -_.@: in Redis user names",
        )
    if _unsafe(password):
        raise RedisAclError(
            f"the Redis password of {setting} holds whitespace or a control character",
            "choose a password without them",
        )
    if user == "default":
        raise RedisAclError(
            f"{setting} logs in as the user `default`, which the ACL file switches off",
            "name a user of its own in the URL",
        )
    return Credentials(setting, user, password, int(parts.get("db") or 0))


def has_credentials(url: str) -> bool:
    """Whether a Redis URL carries a user name or a password (then the server needs ACL users)."""
    parts = parse_url(split_nodes(url)[0])
    return bool(parts.get("username") or parts.get("password"))


def wants_acl(settings: Settings) -> bool:
    """Whether the settings' Redis URLs log in at all (without a user or password: no ACL file)."""
    urls = [settings.redis_url, settings.listener_redis]
    return any(has_credentials(url.get_secret_value()) for url in urls)


def stream_key_patterns(prefix: str, shards: int, *, cluster: bool = False) -> tuple[str, ...]:
    """ACL key patterns matching exactly the raw streams, one per shard (glob characters escaped; the
    braces of a cluster's hash tags are no glob characters and match themselves)."""
    if _unsafe(prefix) or any(c in prefix for c in "\"'"):
        raise RedisAclError(
            "IOT_STREAM_PREFIX holds whitespace, a control character or a quote",
            "choose a stream prefix without them",
        )
    return tuple(
        "".join(f"\\{c}" if c in _GLOB_SPECIAL else c for c in name)
        for name in stream_names(prefix, shards, cluster=cluster)
    )


def _commands(*groups: tuple[str, ...], db: int) -> tuple[str, ...]:
    names = [c for group in (CONNECT_COMMANDS, *groups) for c in group]
    if db:  # redis-py sends SELECT on connect for any database but 0
        names.append("select")
    return tuple(dict.fromkeys(names))


def _listener_commands(settings: Settings) -> tuple[str, ...]:
    cluster = CLUSTER_COMMANDS if settings.redis_cluster else ()
    return (*LISTENER_COMMANDS, *(WAIT_COMMANDS if settings.wait_replicas else ()), *cluster)


def _pipeline_commands(settings: Settings) -> tuple[str, ...]:
    return (*PIPELINE_COMMANDS, *(CLUSTER_COMMANDS if settings.redis_cluster else ()))


def acl_users(settings: Settings) -> AclFile:
    """The listener's and the pipeline's users (one user with the union when both URLs name the same)."""
    pipeline = credentials(settings.redis_url.get_secret_value(), PIPELINE_SETTING)
    listener = (
        credentials(settings.listener_redis_url.get_secret_value(), LISTENER_SETTING)
        if settings.listener_redis_url is not None
        else pipeline
    )
    keys = stream_key_patterns(settings.stream_prefix, settings.stream_shards, cluster=settings.redis_cluster)
    if listener.user != pipeline.user:
        users = (
            RedisUser(
                listener.user,
                listener.password,
                keys,
                _commands(_listener_commands(settings), db=listener.db),
                (LISTENER_SETTING,),
            ),
            RedisUser(
                pipeline.user,
                pipeline.password,
                keys,
                _commands(_pipeline_commands(settings), db=pipeline.db),
                (PIPELINE_SETTING,),
            ),
        )
        return AclFile(users, ())
    if listener.password != pipeline.password:
        raise RedisAclError(
            f"{LISTENER_SETTING} and {PIPELINE_SETTING} name the Redis user {pipeline.user} with different "
            "passwords",
            "give the listener a user of its own, or the same password",
        )
    user = RedisUser(
        pipeline.user,
        pipeline.password,
        keys,
        _commands(
            _listener_commands(settings), _pipeline_commands(settings), db=max(listener.db, pipeline.db)
        ),
        (LISTENER_SETTING, PIPELINE_SETTING),
    )
    why = "is not set, so" if settings.listener_redis_url is None else "names the same user:"
    note = (
        f"{LISTENER_SETTING} {why} the listener and the pipeline both log in as the Redis user "
        f"{pipeline.user}, which gets the commands of both (the listener could read and trim the streams); "
        f"set {LISTENER_SETTING} to a user of its own for a listener that may only append"
    )
    return AclFile((user,), (note,))


def render_acl(settings: Settings) -> str:
    """The ACL file's text (raises RedisAclError naming the setting to fix)."""
    return acl_users(settings).text


def write_acl_file(path: Path, text: str) -> Path:
    """Write `text` to `path` with mode 0600 from the start (a temporary file renamed over the old one)."""
    path = path.resolve()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
