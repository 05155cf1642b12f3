"""Where `up`, run as root, keeps what another service user must reach: under `/var/lib/iot-etl`.

The embedded PostgreSQL and the TLS broker run as other users (PostgreSQL refuses to run as root), who
must pass through every folder above their files; a state folder under a private home (0700) is out of
their reach, and `up` keeps its state folder private. So as root those files live in a folder of root's,
mode 0711 (passable, not listable), one per state folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from iot_core.settings import Settings
from iot_etl.embedded.files import write_as
from iot_etl.embedded.service import services_dir
from iot_etl.startup import CannotStart

SERVICE_USER = "nobody"
#: Root's folder for what another service user must reach (the TLS broker's files, the embedded PostgreSQL's
#: data and binaries): see system_state_dir.
SYSTEM_STATE_DIR = Path("/var/lib/iot-etl")
#: Which state folder a folder of SYSTEM_STATE_DIR belongs to: a file in it holding that folder's path.
ORIGIN_FILE = "origin"


def run_as() -> str | None:
    """The user the embedded servers run as: SERVICE_USER when `up` runs as root, else `up`'s own (None)."""
    return SERVICE_USER if os.geteuid() == 0 else None


def system_state_dir(settings: Settings) -> Path:
    """Root's folder for this state folder's files that another service user must reach:
    `SYSTEM_STATE_DIR/<first 12 hex digits of the SHA-256 of the state folder's path>`, root's, mode 0711
    (passable, not listable), with the state folder's path in its ORIGIN_FILE. A state folder under a
    private home (0700) is out of those users' reach, and `up` keeps its state folder private."""
    state = services_dir(settings).parent
    base = SYSTEM_STATE_DIR / hashlib.sha256(str(state).encode()).hexdigest()[:12]
    for folder in (SYSTEM_STATE_DIR, base):
        root_dir(folder, 0o711)
    origin = base / ORIGIN_FILE
    if not origin.exists():
        write_as(origin, f"{state}\n", None)
    return base


def root_dir(folder: Path, mode: int) -> Path:
    """`folder`, made if missing, with `mode` (CannotStart, in one line, where root cannot make it)."""
    try:
        folder.mkdir(mode=mode, exist_ok=True)
        folder.chmod(mode)  # mkdir's mode is cut by `up`'s umask
    except OSError as exc:
        raise CannotStart(
            f"cannot make {folder} ({exc.strerror}): as root, up keeps there what the embedded PostgreSQL "
            "and broker, which run as other users, must reach; make it writable by root"
        ) from None
    return folder
