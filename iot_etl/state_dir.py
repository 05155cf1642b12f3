"""What `iot-etl up` writes is readable by its own user only.

The state folder (`<Dagster home's parent>`, `.iot-etl/` by default) holds raw payloads (the embedded
Redis's append-only file), keys, passwords and logs. `up` runs under umask 077, and at each start it takes
group and other permissions off whatever an earlier start or version left there, the state folder's own
included (0700). Nothing in it is for another user: what a service running as another user must reach when
`up` runs as root (the embedded PostgreSQL's data, the TLS broker's files) lives in root's
`/var/lib/iot-etl` instead (`iot_etl.embedded.system_state`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700


def restrict_umask() -> int:
    """Files and folders created from now on are private to this user (children inherit it)."""
    return os.umask(PRIVATE_UMASK)


def secure_state_dir(state_root: Path, owned: list[Path]) -> None:
    """Take group/other access off the folders `up` owns (`owned`) and everything in them; files and folders
    of other owners (an earlier version's PostgreSQL data, `nobody`'s) are left to them. The state folder
    itself is made private only when it is `up`'s own (named `.iot-etl`, or created now): a Dagster home set
    to `/tmp/x` must not change `/tmp`."""
    if not state_root.exists() or state_root.name == ".iot-etl":
        state_root.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        _set_mode(state_root, PRIVATE_DIR_MODE)
    me = os.geteuid()
    for top in owned:
        if not top.exists():
            continue
        for path in _walk(top):
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(info.st_mode) or info.st_uid != me:
                continue
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                path.chmod(mode & 0o700)


def _set_mode(path: Path, mode: int) -> None:
    if path.lstat().st_uid == os.geteuid() and stat.S_IMODE(path.stat().st_mode) != mode:
        path.chmod(mode)


def readable_by_others(state_root: Path) -> list[Path]:
    """Paths under the state folder that a user other than the owner could read or list."""
    found = []
    for path in _walk(state_root):
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISLNK(info.st_mode) and info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
            found.append(path)
    return found


def _walk(root: Path) -> Iterator[Path]:
    """Every path under `root` (itself included) that this process can see; unreadable folders (another
    user's) are not entered."""
    yield root
    for folder, dirs, files in os.walk(root, onerror=lambda _exc: None):
        base = Path(folder)
        for name in dirs + files:
            yield base / name
