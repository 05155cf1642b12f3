"""Files and folders of the embedded servers, private to the user that runs each (0600 files, 0700
folders).
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path


def write_as(path: Path, text: str, user: str | None) -> None:
    """Write `text` to `path` with mode 0600, owned by `user` when given (the server's user)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def make_private(folder: Path) -> None:
    """`folder` and what is in it readable by its owner only (0700 folders, 0600 files), also what an
    earlier version wrote with wider modes; what the server writes later follows `up`'s umask."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    for parent, folders, files in os.walk(folder):
        for name in folders:
            (Path(parent) / name).chmod(0o700)
        for name in files:
            (Path(parent) / name).chmod(0o600)
