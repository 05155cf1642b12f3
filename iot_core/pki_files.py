"""How the PKI writes its files: atomically, private from their creation, under one lock.

Every file is written atomically (a temporary file, then `os.replace`) with mode 0600 from its creation,
in directories of mode 0700; key material is never printed, logged or put in an error message.
Changes hold an exclusive `flock` on `<root>/.lock`, so `up` re-signing the CRL and a user revoking a
device do not lose each other's update.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from iot_core.pki_errors import PkiError
from iot_core.pki_layout import PkiLayout


def make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically; the file is 0600 from its creation on."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextmanager
def locked(layout: PkiLayout) -> Iterator[None]:
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_index(layout: PkiLayout, index: dict[str, Any]) -> None:
    write_private(layout.index, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())


def require_init(layout: PkiLayout) -> None:
    if not layout.initialized():
        raise PkiError(f"no PKI in {layout.root}: run `iot-etl certs init` first (or set IOT_PKI_DIR)")
