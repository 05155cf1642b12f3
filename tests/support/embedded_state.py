"""Test state of the embedded services: a copy of the repository to run `up` from, and the removal of what
`up` keeps outside the state folder when it runs as root (`iot_etl.embedded.system_state`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from iot_core.settings import Settings
from iot_etl.embedded.system_state import system_state_dir

ROOT = Path(__file__).resolve().parents[2]


def copy_repository(target: Path) -> Path:
    """The working tree's files (tracked, and untracked ones git does not ignore) copied to `target`, as a
    clone with everyone's current changes; `.venv` stays where it is."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def remove_system_state(settings: Settings) -> None:
    """As root: the folder of SYSTEM_STATE_DIR the embedded PostgreSQL and TLS broker of `settings` used."""
    if os.geteuid() == 0:
        shutil.rmtree(system_state_dir(settings), ignore_errors=True)
